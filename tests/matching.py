"""The fixtures' rule for comparing two lists of detections (see shared/fixtures/reference/README.md)."""

from __future__ import annotations

SCORE_TOLERANCE = 1e-4
MIN_IOU = 0.999
MIN_SCORE = 0.201


def clip(box, width, height):
    x1, y1, x2, y2 = box
    return [min(max(x1, 0), width), min(max(y1, 0), height), min(max(x2, 0), width), min(max(y2, 0), height)]


def iou(a, b) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _normalised(detections, width, height):
    """(class_id, score, clipped box) of the detections whose clipped box is not empty."""
    out = []
    for d in detections:
        class_id, score, box = (d["class_id"], d["score"], d["box"]) if isinstance(d, dict) else (d.class_id, d.score, d.box)
        box = clip(box, width, height)
        if box[2] > box[0] and box[3] > box[1]:
            out.append((class_id, score, box))
    return out


def unmatched(expected, actual, width, height) -> list:
    """Detections of either list (score ≥ 0.201) that have no partner in the other; empty means equivalent."""
    expected, actual = _normalised(expected, width, height), _normalised(actual, width, height)
    missing = []
    for side, others in ((expected, actual), (actual, expected)):
        for class_id, score, box in side:
            if score < MIN_SCORE:
                continue
            if not any(c == class_id and abs(s - score) <= SCORE_TOLERANCE and iou(b, box) >= MIN_IOU
                       for c, s, b in others):
                missing.append((class_id, score, box))
    return missing
