"""The fixtures' rule for comparing two lists of detections (see shared/fixtures/reference/README.md), and the
stricter one that holds the fast path to the plain path.

IoU is no measure for a box thinner than a pixel: a 0.03-px-high box (one clipped at the image's edge) loses
IoU 0.999 to a 6e-5 px move of one corner, a float32 rounding of the canvas coordinates. Such boxes match when
every corner lies within THIN_BOX_CORNER_PX, the corner move that IoU 0.999 allows a 1-px box; the IoU rule stays
for every box of a pixel or more.
"""

from __future__ import annotations

SCORE_TOLERANCE = 1e-4
MIN_IOU = 0.999
MIN_SCORE = 0.201
THIN_BOX_PX = 1.0
THIN_BOX_CORNER_PX = 1e-3


def clip(box, width, height):
    x1, y1, x2, y2 = box
    return [min(max(x1, 0), width), min(max(y1, 0), height), min(max(x2, 0), width), min(max(y2, 0), height)]


def iou(a, b) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def corner_distance(a, b) -> float:
    """The largest difference between two boxes' corresponding coordinates, in pixels."""
    return max(abs(p - q) for p, q in zip(a, b))


def is_thin(box) -> bool:
    return min(box[2] - box[0], box[3] - box[1]) < THIN_BOX_PX


def same_box(a, b) -> bool:
    """The fixtures' box rule: IoU ≥ 0.999, or corners within THIN_BOX_CORNER_PX when either box is thinner than a pixel."""
    if is_thin(a) or is_thin(b):
        return corner_distance(a, b) <= THIN_BOX_CORNER_PX
    return iou(a, b) >= MIN_IOU


def _normalised(detections, width, height):
    """(class_id, score, clipped box) of the detections whose clipped box is not empty."""
    out = []
    for d in detections:
        class_id, score, box = (d["class_id"], d["score"], d["box"]) if isinstance(d, dict) else (d.class_id, d.score, d.box)
        box = clip(box, width, height)
        if box[2] > box[0] and box[3] > box[1]:
            out.append((class_id, score, box))
    return out


def _without_partner(expected, actual, width, height, min_score, partners) -> list:
    expected, actual = _normalised(expected, width, height), _normalised(actual, width, height)
    missing = []
    for side, others in ((expected, actual), (actual, expected)):
        for class_id, score, box in side:
            if score >= min_score and not any(c == class_id and partners(s, b, score, box) for c, s, b in others):
                missing.append((class_id, score, box))
    return missing


def unmatched(expected, actual, width, height) -> list:
    """Detections of either list (score ≥ 0.201) that have no partner in the other; empty means equivalent."""
    return _without_partner(expected, actual, width, height, MIN_SCORE,
                            lambda s, b, score, box: abs(s - score) <= SCORE_TOLERANCE and same_box(b, box))


def unmatched_within(expected, actual, width, height, *, threshold: float, score_tolerance: float,
                     corner_px: float) -> list:
    """Detections of either list without a same-class partner whose score is within score_tolerance and whose
    corners are all within corner_px pixels. Detections within score_tolerance of the score threshold need none:
    the other list may rightly have dropped them."""
    return _without_partner(expected, actual, width, height, threshold + score_tolerance,
                            lambda s, b, score, box: abs(s - score) <= score_tolerance
                            and corner_distance(b, box) <= corner_px)
