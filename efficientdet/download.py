"""`python -m efficientdet.download --coef N --dir weights`: fetch a published checkpoint."""

from __future__ import annotations

import argparse
import logging
import sys
import urllib.error

from .weights import download_weights, weights_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
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
