"""`python -m deploy`: deploy model.tar.gz as a realtime, serverless or asynchronous endpoint or a Batch
Transform job, or delete one.

Built on the SageMaker Python SDK v2 (requirements/deploy.txt). --dry-run prints every API request
it would make, without calling AWS. Each command is a module of its own: realtime.py, asynchronous.py,
batch.py, delete.py.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import asynchronous, batch, delete, realtime


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m deploy", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    for command in (realtime, asynchronous, batch, delete):
        command.register(commands)
    return main


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when done, 1 when AWS refused or failed a request or an endpoint did not start or answer in time
    (told in one line), 2 for bad arguments."""
    args = parser().parse_args(argv)
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # we chose the v2 line for PyTorchModel
    from botocore.exceptions import BotoCoreError, ClientError
    from sagemaker.exceptions import UnexpectedStatusException

    try:
        return args.run(args)
    except (ClientError, BotoCoreError, UnexpectedStatusException, TimeoutError) as error:
        print(f"python -m deploy {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
