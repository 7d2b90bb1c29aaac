"""`python -m deploy`: deploy model.tar.gz as a realtime, serverless or asynchronous endpoint or a Batch
Transform job, or delete one.

Built on the SageMaker Python SDK v2 (requirements/deploy.txt). --dry-run prints every API request
it would make, without calling AWS. Each command is a module of its own: realtime.py, asynchronous.py,
batch.py, delete.py.
"""

from __future__ import annotations

import argparse
import sys

from . import asynchronous, batch, delete, realtime


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    for command in (realtime, asynchronous, batch, delete):
        command.register(commands)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
