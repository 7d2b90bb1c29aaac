"""The command-line options the `python -m deploy` commands share."""

from __future__ import annotations

import argparse
import os
import sys

from samples import example


def common_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION"))
    command.add_argument("--dry-run", action="store_true", help="print the API requests, call nothing")


def model_options(command: argparse.ArgumentParser) -> None:
    """The options of a command that deploys the archive."""
    common_options(command)
    command.add_argument("--model-data", required=True, help="s3://…/model.tar.gz (model-archive-deploy.sh prints it)")
    command.add_argument("--role", required=True, help="SageMaker execution role ARN")
    command.add_argument("--instance-type", default="ml.m5.xlarge")
    command.add_argument("--instance-count", type=int, default=1)
    command.add_argument("--server", choices=("torchserve", "ray"), default="torchserve",
                         help="the AWS image: the PyTorch inference DLC 2.6 (TorchServe, default) or the Ray Serve DLC")
    command.add_argument("--image-uri", help="another image (a pinned -v1.N Ray tag, another region's registry)")
    command.add_argument("--framework-version", default="2.6", help="PyTorch DLC version (torchserve only)")
    command.add_argument("--py-version", default="py312", help="PyTorch DLC Python (torchserve only)")
    command.add_argument("--name", help="model / endpoint / job name (default efficientdet-<UTC time>)")
    command.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="handler environment")
    command.add_argument("--keep", action="store_true", help="keep the endpoint (or model) afterwards")


def smoke_image_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--bucket", default=example.BUCKET, help="bucket of the smoke-test image")
    command.add_argument("--key", default=example.KEY, help="key of the smoke-test image")


def usage_error(message: str) -> SystemExit:
    """A wrong combination of options, told as argparse tells one (exit status 2), before anything is created."""
    print(f"python -m deploy: error: {message}", file=sys.stderr)
    return SystemExit(2)
