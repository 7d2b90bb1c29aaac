"""Response schema and serialisation (application/json or application/jsonlines)."""

from __future__ import annotations

import json
import time

from .bodies import JSON, JSON_LINES
from .errors import RequestError, one_line
from .service import ImageFailure, ImageResult, Prediction, log_prediction

JSON_LINES_TYPE = JSON_LINES[0]


def result_json(result: ImageResult | ImageFailure, model: str) -> dict:
    """One image's entry of the response."""
    if isinstance(result, ImageFailure):
        return {"source": result.source, "error": result.error.as_dict()}
    return {
        "source": result.source, "width": result.width, "height": result.height, "model": model,
        "pred_threshold": result.pred_threshold, "iou_threshold": result.iou_threshold,
        "detections": [{"label": d.label, "class_id": d.class_id, "score": d.score, "box": list(d.box)}
                       for d in result.detections],
    }


def negotiate(accept: str | None) -> str:
    """The response type for an Accept header; RequestError 406 when none can be served."""
    for offered in (accept or JSON).split(","):
        kind = offered.split(";")[0].strip().lower()
        if kind in ("", "*/*", "application/*", JSON):
            return JSON
        if kind in JSON_LINES:
            return JSON_LINES_TYPE
    raise RequestError(406, f"cannot answer with {one_line(accept, 80)!r}; accept {JSON} or {JSON_LINES_TYPE}")


def serialise(prediction: Prediction, content_type: str) -> str:
    entries = [result_json(r, prediction.model) for r in prediction.results]
    if content_type == JSON_LINES_TYPE:
        return "".join(json.dumps(e, allow_nan=False) + "\n" for e in entries)
    return json.dumps(entries if prediction.several else entries[0], allow_nan=False)


def respond(prediction: Prediction, content_type: str) -> str:
    """The response body, or the RequestError of a request whose every image failed; logs the request."""
    error = prediction.request_error()
    if error is not None:
        log_prediction(prediction, error.status_code)
        raise error
    start = time.perf_counter()
    body = serialise(prediction, content_type)
    prediction.timings["serialise"] = time.perf_counter() - start
    log_prediction(prediction, 200)
    return body
