"""The published checkpoints: where they are, and `python -m efficientdet.download --coef N --dir weights`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .config import get_config
from .weights import load_state_dict

log = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/zylo117/Yet-Another-Efficient-Pytorch/releases/download"
# D0–D6 were published in release 1.0, D7 and D8 ("D7X") in release 1.2.
RELEASE_OF_COEF = {coef: "1.0" if coef <= 6 else "1.2" for coef in range(9)}


def weights_url(compound_coef: int) -> str:
    get_config(compound_coef)
    return f"{RELEASE_URL}/{RELEASE_OF_COEF[compound_coef]}/efficientdet-d{compound_coef}.pth"


def download_weights(compound_coef: int, directory: str | os.PathLike) -> Path:
    """Download the published checkpoint into `directory` (atomically) and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"efficientdet-d{compound_coef}.pth"
    url = weights_url(compound_coef)
    log.info("downloading %s", url)
    with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".part") as part:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    part.write(chunk)
        except BaseException:
            os.unlink(part.name)
            raise
    load_state_dict(part.name)
    os.replace(part.name, target)
    return target




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m efficientdet.download", description=__doc__)
    parser.add_argument("--coef", type=int, choices=range(9), default=0, help="compound coefficient 0-8")
    parser.add_argument("--dir", default="weights", help="directory to write efficientdet-d{N}.pth into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = download_weights(args.coef, args.dir)
    except (urllib.error.URLError, OSError) as error:
        print(f"could not download {weights_url(args.coef)}: {error}\n"
              "Without network access, `make serve` runs on generated UNTRAINED weights instead.", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
