"""Request bodies (CSV, JSON, JSON Lines, raw image bytes) parsed into image requests."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .errors import RequestError, bad_request, too_large

CSV = "text/csv"
JSON = "application/json"
JSON_LINES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl")
# each format's own type, and SageMaker's built-in algorithms' catch-all; the bytes decide the format either way
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff", "image/bmp", "application/x-image")
VIDEO_TYPES = ("video/mp4", "video/quicktime", "video/webm", "video/x-matroska", "video/mp2t", "video/mpeg",
               "video/x-msvideo", "video/avi", "application/mxf", "video/x-m4v", "video/3gpp", "video/x-flv",
               "video/ogg", "video/x-ms-wmv", "video/x-ms-asf", "video/dv")

# per entry, in the body or the Custom-Attributes header; the sampling options apply to videos only
SAMPLING_FIELDS = ("sample_fps", "every_n_frames", "timestamps", "keyframes", "start", "end", "max_frames")
# what a clip's answer holds: its frames, its labels' segments, or both; and how Rekognition's shape orders labels
ANSWER_FIELDS = ("aggregate", "sort_by")
AGGREGATES = ("frames", "segments", "both")
SORT_ORDERS = ("timestamp", "name")
OPTION_FIELDS = ("pred_threshold", "iou_threshold", "max_detections", "classes", *SAMPLING_FIELDS, *ANSWER_FIELDS)
MAX_SAMPLE_FPS = 1000.0
FIELDS = {"bucket", "key", "s3_uri", *OPTION_FIELDS}
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
IP_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
# S3's general purpose bucket naming rules: names with these ends are reserved (access point aliases, Object
# Lambda, Multi-Region Access Points, directory and table buckets) or refused (punycode, S3's own prefixes).
RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # only these: U+2028, U+0085 … may sit inside a JSON string
DOT_SEGMENTS = {".", ".."}
BYTE_ORDER_MARK = "\ufeff"
MAX_KEY_BYTES = 1024
MAX_DETECTIONS_LIMIT = 10_000


@dataclass(frozen=True)
class EntryRequest:
    """One entry to detect in, an image or a video (told apart by its bytes): an S3 object or bytes sent inline,
    with its options."""

    bucket: str | None = None
    key: str | None = None
    inline: bytes | None = None
    pred_threshold: float | None = None
    iou_threshold: float | None = None
    max_detections: int | None = None
    classes: tuple[str | int, ...] | None = None
    sample_fps: float | None = None
    every_n_frames: int | None = None
    timestamps: tuple[float, ...] | None = None
    keyframes: bool | None = None
    start: float | None = None
    end: float | None = None
    max_frames: int | None = None
    aggregate: str | None = None
    sort_by: str | None = None
    error: RequestError | None = None
    origin: str | None = None  # where inline bytes came from (a local file), reported as the source
    path: Path | None = None  # a local file read in place: the CLI's entries only, never a request body's

    @property
    def source(self) -> str | None:
        return f"s3://{self.bucket}/{self.key}" if self.bucket is not None else self.origin


class ParsedBody(NamedTuple):
    """A body's entries in order, and whether it listed several (then the answer is a list, whatever is left)."""

    entries: list[EntryRequest]
    several: bool


def media_type(content_type: str | None) -> str:
    """'text/csv; charset=utf-8' → 'text/csv'."""
    return (content_type or "").split(";")[0].strip().lower()


def bucket_name_problem(name: str) -> str | None:
    """What makes `name` no valid S3 bucket name, or None: checked before any S3 call, as S3 itself would refuse it."""
    if not BUCKET_NAME.match(name):
        return "3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
    if ".." in name:
        return "no two adjacent dots"
    if IP_ADDRESS.match(name):
        return "not formatted as an IP address"
    reserved = next((p for p in RESERVED_BUCKET_PREFIXES if name.startswith(p)), None) or next(
        (s for s in RESERVED_BUCKET_SUFFIXES if name.endswith(s)), None)
    return None if reserved is None else f"{reserved!r} is reserved by S3"


def validate_location(bucket: object, key: object) -> tuple[str, str]:
    if not isinstance(bucket, str) or not bucket.strip():
        raise bad_request("bucket is missing or empty")
    if not isinstance(key, str) or not key.strip():
        raise bad_request("key is missing or empty")
    bucket, key = bucket.strip(), key.strip()
    problem = bucket_name_problem(bucket)
    if problem is not None:
        raise bad_request(f"invalid bucket name {bucket[:80]!r}: {problem}")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("key is not valid Unicode (it holds a lone surrogate)") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise bad_request(f"key is longer than {MAX_KEY_BYTES} bytes")
    if CONTROL_CHARACTERS.search(key):
        raise bad_request("key contains control characters")
    if DOT_SEGMENTS.intersection(key.split("/")):
        raise bad_request(f"key {key[:80]!r} has a '.' or '..' path segment, which S3 proxies may resolve "
                          "to another object")
    return bucket, key


def split_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key-or-prefix → (bucket, key or prefix), unchecked: for URIs S3 or SageMaker gave, or a CLI's."""
    bucket, _, rest = uri.removeprefix("s3://").partition("/")
    return bucket, rest


def parse_s3_location(text: str) -> tuple[str, str]:
    """'s3://bucket/key' or 'bucket/key' → (bucket, key)."""
    text = text.strip()
    if text.startswith("s3://"):
        text = text[len("s3://"):]
    elif "://" in text:
        raise bad_request(f"unsupported location {text[:80]!r}: expected s3://bucket/key or bucket/key")
    bucket, _, key = text.partition("/")
    return validate_location(bucket, key)


def _threshold(value: object, name: str, where: str) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or (isinstance(value, float) and not math.isfinite(value)) or not 0 <= value <= 1:
        raise bad_request(f"{where}{name} must be a number in [0, 1], got {json.dumps(value)[:40]}")
    return float(value)


def _max_detections(value: object, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DETECTIONS_LIMIT:
        raise bad_request(f"{where}{name} must be an integer from 1 to {MAX_DETECTIONS_LIMIT}, "
                          f"got {json.dumps(value)[:40]}")
    return value


def _classes(value: object, name: str, where: str) -> tuple[str | int, ...]:
    if not isinstance(value, list) or not value or not all(
            isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool)) for c in value):
        raise bad_request(f"{where}{name} must be a non-empty list of label names or class ids")
    return tuple(value)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _sample_fps(value: object, name: str, where: str) -> float:
    if not _finite(value) or not 0 < value <= MAX_SAMPLE_FPS:
        raise bad_request(f"{where}{name} must be a number of frames per second in (0, {MAX_SAMPLE_FPS:g}], "
                          f"got {json.dumps(value)[:40]}")
    return float(value)


def _count(value: object, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"{where}{name} must be an integer of at least 1, got {json.dumps(value)[:40]}")
    return value


def _seconds(value: object, name: str, where: str) -> float:
    if not _finite(value) or value < 0:
        raise bad_request(f"{where}{name} must be a number of seconds, at least 0, got {json.dumps(value)[:40]}")
    return float(value)


def _flag(value: object, name: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"{where}{name} must be true or false, got {json.dumps(value)[:40]}")
    return value


def _one_of(allowed: tuple[str, ...]):
    def check(value: object, name: str, where: str) -> str:
        if not isinstance(value, str) or value.strip().lower() not in allowed:
            raise bad_request(f"{where}{name} must be one of {', '.join(allowed)}, got {json.dumps(value)[:40]}")
        return value.strip().lower()
    return check


def _timestamps(value: object, name: str, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(_finite(t) and t >= 0 for t in value):
        raise bad_request(f"{where}{name} must be a non-empty list of seconds, each at least 0")
    return tuple(float(t) for t in value)


OPTION_CHECKS = {"pred_threshold": _threshold, "iou_threshold": _threshold, "max_detections": _max_detections,
                 "classes": _classes, "sample_fps": _sample_fps, "every_n_frames": _count, "timestamps": _timestamps,
                 "keyframes": _flag, "aggregate": _one_of(AGGREGATES), "sort_by": _one_of(SORT_ORDERS), "start": _seconds, "end": _seconds, "max_frames": _count}


def option_fields(item: dict, where: str = "") -> dict[str, object]:
    """The per-image options an object sets (JSON body or Custom-Attributes header), each validated;
    RequestError 400 naming a bad or unknown one. `where` says where they came from in messages."""
    unknown = sorted(set(item) - set(OPTION_FIELDS))
    if unknown:
        raise bad_request(f"{where}unknown option {unknown[0][:60]!r}; allowed: {', '.join(OPTION_FIELDS)}")
    return {name: OPTION_CHECKS[name](value, name, where) for name, value in item.items()}


def parse_object(item: object) -> EntryRequest:
    """One JSON request object → EntryRequest, or RequestError(400) naming the problem."""
    if not isinstance(item, dict):
        raise bad_request(f"each request must be a JSON object, got {type(item).__name__}")
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise bad_request(f"unknown field {unknown[0][:60]!r}; allowed fields: {', '.join(sorted(FIELDS))}")
    if "s3_uri" in item:
        if "bucket" in item or "key" in item:
            raise bad_request("give either s3_uri or bucket and key, not both")
        if not isinstance(item["s3_uri"], str) or not item["s3_uri"].strip().startswith("s3://"):
            raise bad_request("s3_uri must be a string of the form s3://bucket/key")
        bucket, key = parse_s3_location(item["s3_uri"])
    else:
        bucket, key = validate_location(item.get("bucket"), item.get("key"))
    return EntryRequest(bucket=bucket, key=key,
                        **option_fields({name: item[name] for name in OPTION_FIELDS if name in item}))


def _decode_text(body: str | bytes) -> str:
    if isinstance(body, str):
        return body.removeprefix(BYTE_ORDER_MARK)
    try:
        return bytes(body).decode("utf-8-sig")  # a leading byte order mark (Excel, Windows tools) is dropped
    except UnicodeDecodeError:
        raise bad_request("request body is not valid UTF-8 text") from None


def _load_json(text: str, what: str) -> object:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise bad_request(f"{what} is nested too deeply") from None
    except ValueError as error:
        if isinstance(error, RequestError):
            raise
        raise bad_request(f"{what} is not valid JSON: {error}") from None


def _reject_constant(name: str) -> float:
    raise bad_request(f"{name} is not a valid JSON number")


def _several(entries: list, parse) -> list[EntryRequest]:
    """Several images: a bad entry is kept in its place as an error, unless every entry is bad."""
    requests = []
    for entry in entries:
        try:
            requests.append(parse(entry))
        except RequestError as error:
            requests.append(EntryRequest(error=error))
    if all(r.error for r in requests):
        raise requests[0].error
    return requests


def _location(line: str) -> EntryRequest:
    return EntryRequest(*parse_s3_location(line))


def _json_line(number_and_line: tuple[int, str]) -> EntryRequest:
    number, line = number_and_line
    return parse_object(_load_json(line, f"line {number}"))


def _check_count(count: int, max_images: int) -> None:
    if count == 0:
        raise bad_request("the request lists no images")
    if count > max_images:
        raise too_large(f"{count} images in one request; at most {max_images} are allowed")


def parse_request(body: str | bytes | bytearray, content_type: str | None, max_images: int = 1000) -> ParsedBody:
    """A request body's entries, and whether it listed several.

    A body that lists one image raises its error; in a body that lists several, a bad entry
    becomes an error in its place.
    """
    kind = media_type(content_type)
    if kind in IMAGE_TYPES or kind in VIDEO_TYPES:
        if not body:
            raise bad_request(f"request body is empty: expected {'video' if kind in VIDEO_TYPES else 'image'} bytes")
        return ParsedBody([EntryRequest(inline=bytes(body))], several=False)
    if kind not in (CSV, JSON, *JSON_LINES):
        raise RequestError(415, f"unsupported content type {(content_type or '')[:60]!r}; use {CSV}, {JSON}, "
                                f"{JSON_LINES[0]}, an image type ({', '.join(IMAGE_TYPES[:2])} … {IMAGE_TYPES[-1]}) or a video type "
                                f"({', '.join(VIDEO_TYPES[:3])} …)")
    text = _decode_text(body)
    if not text.strip():
        raise bad_request("request body is empty")
    if kind == JSON:
        parsed = _load_json(text, "request body")
        if not isinstance(parsed, list):
            return ParsedBody([parse_object(parsed)], several=False)
        _check_count(len(parsed), max_images)
        return ParsedBody(_several(parsed, parse_object), several=True)
    lines = [line.strip() for line in LINE_BREAK.split(text) if line.strip()]
    _check_count(len(lines), max_images)
    parse = _location if kind == CSV else _json_line
    entries = lines if kind == CSV else list(enumerate(lines, 1))
    if len(entries) == 1:
        return ParsedBody([parse(entries[0])], several=False)
    return ParsedBody(_several(entries, parse), several=True)
