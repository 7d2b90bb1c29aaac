"""X-Amzn-SageMaker-Custom-Attributes: per-request options for any body, raw image bytes included.

`pred_threshold=0.3,iou_threshold=0.5,max_detections=20,classes=person|car` (and for videos
`sample_fps=2,start=10,end=20`, `timestamps=1.5|3|7.25`) — comma-separated key=value pairs, validated exactly as the JSON fields are (400 naming the bad key). A JSON body's own fields win.
"""

from __future__ import annotations

import dataclasses
import json

from .bodies import EntryRequest, option_fields
from .errors import bad_request

HEADER = "X-Amzn-SageMaker-Custom-Attributes"
MAX_HEADER_CHARACTERS = 1024  # SageMaker's own limit for this header


def _value(key: str, text: str) -> object:
    """A number where the text is one (JSON's rules), a list for `classes` and `timestamps`, else the text."""
    if key == "classes":
        return [int(c) if c.strip().isdigit() else c.strip() for c in text.split("|")]
    if key == "timestamps":
        return [_value("", t.strip()) for t in text.split("|")]
    try:
        return json.loads(text, parse_constant=lambda name: text)
    except ValueError:
        return text


def parse_custom_attributes(header: str | None) -> dict[str, object]:
    """The options a Custom-Attributes header sets; RequestError 400 naming what is wrong."""
    if not header or not header.strip():
        return {}
    if len(header) > MAX_HEADER_CHARACTERS:
        raise bad_request(f"{HEADER} is longer than {MAX_HEADER_CHARACTERS} characters")
    given: dict[str, object] = {}
    for pair in header.split(","):
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise bad_request(f"{HEADER}: expected key=value pairs separated by commas, got {pair.strip()[:60]!r}")
        if key in given:
            raise bad_request(f"{HEADER}: {key!r} is given twice")
        given[key] = _value(key, text.strip())
    return option_fields(given, f"{HEADER}: ")


def with_attributes(requests: list[EntryRequest], options: dict[str, object]) -> list[EntryRequest]:
    """The requests with the header's options wherever a body did not set them itself (a JSON body's own
    fields win); entries that are already errors stay as they are."""
    if not options:
        return requests
    return [request if request.error else dataclasses.replace(
        request, **{name: value for name, value in options.items() if getattr(request, name) is None})
        for request in requests]
