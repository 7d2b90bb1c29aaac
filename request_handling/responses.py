"""Response schema and serialisation (application/json or application/jsonlines)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from efficientdet import Detection

from .errors import RequestError
from .requests import JSON, JSON_LINES

JSON_LINES_TYPE = JSON_LINES[0]


def image_result(source: str | None, width: int, height: int, model: str, pred_threshold: float,
                 iou_threshold: float, detections: Sequence[Detection]) -> dict:
    return {
        "source": source, "width": width, "height": height, "model": model,
        "pred_threshold": pred_threshold, "iou_threshold": iou_threshold,
        "detections": [{"label": d.label, "class_id": d.class_id, "score": d.score, "box": list(d.box)}
                       for d in detections],
    }


def error_result(source: str | None, error: RequestError) -> dict:
    return {"source": source, "error": error.as_dict()}


def negotiate(accept: str | None) -> str:
    """The response type for an Accept header; RequestError 406 when none can be served."""
    for offered in (accept or JSON).split(","):
        kind = offered.split(";")[0].strip().lower()
        if kind in ("", "*/*", "application/*", JSON):
            return JSON
        if kind in JSON_LINES:
            return JSON_LINES_TYPE
    raise RequestError(406, f"cannot answer with {accept!r}; accept {JSON} or {JSON_LINES_TYPE}")


def serialise(results: list[dict], several: bool, content_type: str) -> str:
    if content_type == JSON_LINES_TYPE:
        return "".join(json.dumps(r, allow_nan=False) + "\n" for r in results)
    return json.dumps(results if several else results[0], allow_nan=False)
