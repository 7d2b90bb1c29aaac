"""Content negotiation and serialisation (application/json or application/jsonlines, in a format), and the
request's log line."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from .bodies import JSON, JSON_LINES
from .errors import RequestError, one_line
from .formats import ENTRY_BUILDERS, OURS, entry
from .results import ClipResult, EntryFailure, Prediction

log = logging.getLogger("efficientdet.serving")
UNTRAINED_WARNING = "UNTRAINED WEIGHTS: detections are meaningless (offline demo checkpoint)"

JSON_LINES_TYPE = JSON_LINES[0]


@dataclass(frozen=True)
class ResponseType:
    """What to answer with: JSON or JSON Lines, and which format each image's entry takes."""

    media_type: str = JSON
    format: str = OURS


def negotiate(accept: str | None) -> ResponseType:
    """The response type for an Accept header, e.g. `application/json; format=rekognition`; RequestError 406
    when none can be served."""
    for offered in (accept or JSON).split(","):
        kind, *parameters = (part.strip() for part in offered.split(";"))
        kind = kind.lower()
        media_type = JSON if kind in ("", "*/*", "application/*", JSON) else JSON_LINES_TYPE if kind in JSON_LINES \
            else None
        if media_type is None:
            continue
        named = dict(p.partition("=")[::2] for p in parameters if "=" in p)
        response_format = named.get("format", OURS).strip().strip('"').lower()
        if response_format not in ENTRY_BUILDERS:
            raise RequestError(406, f"unknown response format {one_line(response_format, 60)!r}; formats: "
                                    f"{', '.join(ENTRY_BUILDERS)}")
        return ResponseType(media_type, response_format)
    raise RequestError(406, f"cannot answer with {one_line(accept, 80)!r}; accept {JSON} or {JSON_LINES_TYPE}")


def serialise(prediction: Prediction, response_type: ResponseType) -> str:
    entries = [entry(r, prediction.model, response_type.format) for r in prediction.results]
    if response_type.media_type == JSON_LINES_TYPE:
        return "".join(json.dumps(e, allow_nan=False) + "\n" for e in entries)
    return json.dumps(entries if prediction.several else entries[0], allow_nan=False)


def respond(prediction: Prediction, response_type: ResponseType) -> str:
    """The response body, or the RequestError of a request whose every image failed; logs the request."""
    error = prediction.request_error()
    if error is not None:
        log_prediction(prediction, error.status_code)
        raise error
    start = time.perf_counter()
    body = serialise(prediction, response_type)
    prediction.timings["serialise"] = time.perf_counter() - start
    log_prediction(prediction, 200)
    return body


def log_prediction(prediction: Prediction, status: int) -> None:
    """The request's log line: status, entries, the frames sampled from its clips, forward passes, per-entry and
    per-frame errors, milliseconds per stage."""
    clips = [r for r in prediction.results if isinstance(r, ClipResult)]
    errors = [r.error.status_code for r in prediction.results if isinstance(r, EntryFailure)] + [
        f.outcome.error.status_code for c in clips for f in c.frames if isinstance(f.outcome, EntryFailure)]
    log.info("detected status=%d images=%d frames=%d batches=%d errors=%s timings_ms=%s%s", status,
             len(prediction.results), sum(len(c.frames) for c in clips), prediction.batches, errors,
             json.dumps({stage: round(seconds * 1000, 2) for stage, seconds in prediction.timings.items()}),
             f" {UNTRAINED_WARNING}" if prediction.untrained else "")
