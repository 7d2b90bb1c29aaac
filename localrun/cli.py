"""The command line both local servers take (`make serve`, `make serve SERVER=ray`), and how they start and stop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path


def server_arguments(module: str, description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--model", help="a model.tar.gz or model dir to serve instead of assembling one")
    parser.add_argument("--coef", type=int, choices=range(9), default=int(os.environ.get("EFFICIENTDET_COMPOUND_COEF", 0)))
    parser.add_argument("--weights", help="checkpoint to put in the assembled model dir")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-dir", type=Path, help="where Ray Serve's logs go (serve.log, and Ray's own under ray/; "
                        "keep it short: Ray's socket paths live there); default: new folders under /tmp")
    return parser.parse_args(argv)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def serving_from_a_terminal() -> None:
    """Log to the terminal, and let SIGINT and SIGTERM raise KeyboardInterrupt, so that a server's `finally` stops it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
