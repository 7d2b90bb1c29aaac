"""Expanding the CLI's inputs (files, folders, s3:// prefixes, manifests) into image and video requests."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from pathlib import Path

from request_handling.bodies import EntryRequest, parse_s3_location, split_s3_uri
from request_handling.errors import bad_request, not_found
from request_handling.media import SIGNATURE_BYTES, is_clip_name, is_image, is_image_name, is_video


def is_media_name(name: str) -> bool:
    """An image's or a video's file name."""
    return is_image_name(name) or is_clip_name(name)


def list_s3_media(client, uri: str) -> Iterator[EntryRequest]:
    """Every image and video object under s3://bucket/prefix, in key order."""
    bucket, prefix = split_s3_uri(uri)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if is_media_name(item["Key"]):
                yield EntryRequest(bucket=bucket, key=item["Key"])


def local_file(path: Path) -> EntryRequest:
    """A local file as a request, read in place when it is its turn (a clip is never read whole)."""
    return EntryRequest(origin=str(path), path=path)


MANIFEST_SNIFF_BYTES = 64 * 1024  # a manifest is UTF-8 text without NUL bytes from its first bytes on


def is_manifest(path: Path) -> bool:
    """A file of another name: a manifest when it is text; an image or a clip is told by its bytes; anything else
    is refused (400) rather than read as lines. Only the file's first bytes are read to tell."""
    with path.open("rb") as file:
        head = file.read(MANIFEST_SNIFF_BYTES)
    if is_image(head[:SIGNATURE_BYTES]) or is_video(head[:SIGNATURE_BYTES]):
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at the end is no error
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise bad_request(f"{path}: neither an image, a video nor a manifest (a text file of inputs, one a line)")
    return True


def expand(inputs: list[str], s3_client, check_bucket: Callable[[EntryRequest], None]) -> Iterator[EntryRequest]:
    """Requests for every input: an image file, a folder (recursively), s3://…/ or a manifest of such lines.

    check_bucket raises for a bucket that may not be read, before anything in it is listed.
    """
    for item in inputs:
        if item.startswith("s3://"):
            if is_media_name(item) and not item.endswith("/"):
                yield EntryRequest(*parse_s3_location(item))
            else:
                check_bucket(EntryRequest(bucket=split_s3_uri(item)[0], key=""))
                yield from list_s3_media(s3_client, item)
            continue
        path = Path(item)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and is_media_name(p.name)):
                yield local_file(file)
        elif not path.exists():
            raise not_found(f"{item}: no such file, folder or manifest")
        elif is_media_name(path.name) or not is_manifest(path):
            yield local_file(path)
        else:
            lines = [line.strip() for line in path.read_text().splitlines()]
            yield from expand([line for line in lines if line and not line.startswith("#")], s3_client, check_bucket)
