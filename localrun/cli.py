"""The command line both local servers take (`make serve`, `make serve SERVER=ray`)."""

from __future__ import annotations

import argparse
import os


def server_arguments(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", help="a model.tar.gz or model dir to serve instead of assembling one")
    parser.add_argument("--coef", type=int, choices=range(9), default=int(os.environ.get("EFFICIENTDET_COMPOUND_COEF", 0)))
    parser.add_argument("--weights", help="checkpoint to put in the assembled model dir")
    parser.add_argument("--port", type=int, default=8080)
    return parser.parse_args(argv)
