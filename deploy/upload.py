"""Uploading model.tar.gz to s3://$MODEL_BUCKET/models/efficientdet/videoblocks/<env>/<UTC time>/ and verifying it."""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3

from samples import example

ENVIRONMENTS = ("dev", "staging", "prod")
PREFIX = "models/efficientdet/videoblocks"


def archive_key(environment: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    return f"{PREFIX}/{environment}/{stamp}/model.tar.gz"


def upload_archive(archive: Path, bucket: str, environment: str, client=None) -> str:
    """Upload with a Content-MD5 that S3 checks against the bytes it received (it refuses the upload on a
    mismatch), then compare the stored size; returns the s3:// URI.

    The ETag is not compared: with SSE-KMS (and multipart uploads) it is not the object's MD5.
    """
    client = client or boto3.client("s3")
    key = archive_key(environment)
    with open(archive, "rb") as f:
        md5 = hashlib.file_digest(f, "md5")
    with open(archive, "rb") as body:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=base64.b64encode(md5.digest()).decode(),
                          ContentType="application/gzip")
    head = client.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != archive.stat().st_size:
        raise RuntimeError(f"verification failed for s3://{bucket}/{key}: {head['ContentLength']} bytes stored, "
                           f"{archive.stat().st_size} sent")
    return f"s3://{bucket}/{key}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model-archive-deploy.sh",
                                     description="Upload $ARCHIVE (default build/model.tar.gz) to "
                                                 "s3://$MODEL_BUCKET/models/efficientdet/videoblocks/<env>/<UTC time>/.")
    parser.add_argument("environment", nargs="?", default="dev", choices=ENVIRONMENTS)
    args = parser.parse_args(argv)
    archive = Path(os.environ.get("ARCHIVE") or "build/model.tar.gz")
    if not archive.is_file():
        print(f"error: archive {archive} not found: run ./model-archive-build.sh first or set ARCHIVE", file=sys.stderr)
        return 1
    bucket = os.environ.get("MODEL_BUCKET") or example.BUCKET
    print(f"uploading {archive} ({archive.stat().st_size} bytes) to bucket {bucket} ({args.environment})", file=sys.stderr)
    print(upload_archive(archive, bucket, args.environment))
    return 0


if __name__ == "__main__":
    sys.exit(main())
