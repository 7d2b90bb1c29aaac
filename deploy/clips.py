"""A clip library under an S3 prefix as Batch Transform request files: one JSON line per clip, split for the
instances, and what an earlier job already answered left out (--resume)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from request_handling.bodies import split_s3_uri

JOINED_ANSWER = "SageMakerOutput"  # where Batch Transform's JoinSource=Input puts the answer beside the request line


class Clip(NamedTuple):
    bucket: str
    key: str
    size: int


def list_clips(s3, uri: str) -> Iterator[Clip]:
    """Every clip under s3://bucket/prefix (by its suffix: every container the handler reads), in key order."""
    from request_handling.media import is_clip_name  # media imports torch: every other deploy command starts without it

    bucket, prefix = split_s3_uri(uri)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if is_clip_name(item["Key"]):
                yield Clip(bucket, item["Key"], item["Size"])


def answered_clips(s3, output_uri: str) -> set[tuple[str, str]]:
    """(bucket, key) of each clip with an answer in the .out files under the output prefix; a line answered with an
    error (a clip that could not be read, a deadline) does not count, so a resumed job tries it again."""
    bucket, prefix = split_s3_uri(output_uri)
    answered = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".out"):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode("utf-8", "replace")
                answered.update(clips_answered_in(body.splitlines()))
    return answered


def clips_answered_in(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(bucket, key) of each joined answer line (the request's fields and SageMakerOutput) that holds no error."""
    for line in lines:
        try:
            joined = json.loads(line)
        except ValueError:
            continue  # a line cut short by a stopped job
        answer = joined.get(JOINED_ANSWER) if isinstance(joined, dict) else None
        if isinstance(answer, dict) and "error" not in answer and "bucket" in joined and "key" in joined:
            yield joined["bucket"], joined["key"]


def split_for_instances(clips: list[Clip], files: int) -> list[list[Clip]]:
    """Clips dealt into `files` request files of about equal bytes (largest first onto the lightest file), each
    file's clips in key order; Batch Transform hands whole files to instances. No empty file."""
    shares: list[list[Clip]] = [[] for _ in range(min(files, len(clips)))]
    sizes = [0] * len(shares)
    for clip in sorted(clips, key=lambda clip: (-clip.size, clip.key)):
        lightest = sizes.index(min(sizes))
        shares[lightest].append(clip)
        sizes[lightest] += clip.size
    return [sorted(share, key=lambda clip: clip.key) for share in shares]


def request_line(clip: Clip, options: dict[str, object]) -> str:
    """One request of the handler's contract: the clip's S3 location and its sampling and answer options."""
    return json.dumps({"bucket": clip.bucket, "key": clip.key, **options})
