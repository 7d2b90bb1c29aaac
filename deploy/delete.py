"""`python -m deploy delete`: an endpoint, its configuration and model."""

from __future__ import annotations

from .options import common_options
from .sagemaker_model import delete_endpoint, sagemaker_session


def register(commands) -> None:
    command = commands.add_parser("delete", help="delete an endpoint, its configuration and model")
    common_options(command)
    command.add_argument("--name", required=True)
    command.set_defaults(run=delete)


def delete(args) -> int:
    delete_endpoint(sagemaker_session(args), args.name)
    return 0
