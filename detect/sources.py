"""Expanding the CLI's inputs (files, folders, s3:// prefixes, manifests) into image and video requests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

from request_handling.bodies import EntryRequest, parse_s3_location
from request_handling.errors import not_found

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv"}  # what a listing picks; the kind is told by the bytes


def is_media_name(name: str) -> bool:
    """An image's or a video's file name."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES


def list_s3_media(client, uri: str) -> Iterator[EntryRequest]:
    """Every image and video object under s3://bucket/prefix, in key order."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if is_media_name(item["Key"]):
                yield EntryRequest(bucket=bucket, key=item["Key"])


def local_image(path: Path) -> EntryRequest:
    """A local file as a request; its bytes are read when it is its turn (see `with_bytes`)."""
    return EntryRequest(origin=str(path))


def expand(inputs: list[str], s3_client, check_bucket: Callable[[EntryRequest], None]) -> Iterator[EntryRequest]:
    """Requests for every input: an image file, a folder (recursively), s3://…/ or a manifest of such lines.

    check_bucket raises for a bucket that may not be read, before anything in it is listed.
    """
    for item in inputs:
        if item.startswith("s3://"):
            if is_media_name(item) and not item.endswith("/"):
                yield EntryRequest(*parse_s3_location(item))
            else:
                check_bucket(EntryRequest(bucket=item.removeprefix("s3://").partition("/")[0], key=""))
                yield from list_s3_media(s3_client, item)
            continue
        path = Path(item)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and is_media_name(p.name)):
                yield local_image(file)
        elif not path.exists():
            raise not_found(f"{item}: no such file, folder or manifest")
        elif is_media_name(path.name):
            yield local_image(path)
        else:
            lines = [line.strip() for line in path.read_text().splitlines()]
            yield from expand([line for line in lines if line and not line.startswith("#")], s3_client, check_bucket)


def with_bytes(request: EntryRequest) -> EntryRequest:
    """Read a local file's bytes into its request (S3 requests are fetched by the service)."""
    if request.bucket is not None or request.inline is not None:
        return request
    try:
        data = Path(request.origin).read_bytes()
    except OSError as error:
        return EntryRequest(origin=request.origin, error=not_found(f"{request.origin}: {error.strerror}"))
    return dataclasses.replace(request, inline=data)
