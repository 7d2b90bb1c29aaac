"""The tests' own rule for comparing detections: IoU for boxes of a pixel or more, corners for thinner ones."""

from __future__ import annotations

import pytest
from helpers.matching import unmatched, unmatched_within

pytestmark = pytest.mark.unit


def detection(score, box, class_id=14):
    return {"class_id": class_id, "score": score, "box": box}


def test_a_box_thinner_than_a_pixel_matches_by_its_corners():
    """The box CI met on an AVX-512 machine: 0.033 px high at the image's bottom edge, one corner 6e-5 px apart,
    which puts the IoU of the two boxes at 0.998."""
    a = detection(0.4227, [56.44, 199.967, 87.59, 200.0])
    b = detection(0.42271, [56.44, 199.96706, 87.59, 200.0])
    assert unmatched([a], [b], 320, 200) == []
    moved = detection(0.4227, [56.44, 199.96, 87.59, 200.0])  # 7e-3 px: more than IoU 0.999 allows a 1-px box
    assert len(unmatched([a], [moved], 320, 200)) == 2


def test_boxes_of_a_pixel_or_more_keep_the_iou_rule():
    a = detection(0.5, [10.0, 10.0, 20.0, 20.0])
    assert unmatched([a], [detection(0.5, [10.0, 10.0, 20.0, 20.004])], 320, 200) == []
    assert len(unmatched([a], [detection(0.5, [10.0, 10.0, 20.0, 20.02])], 320, 200)) == 2
    assert len(unmatched([a], [detection(0.5, [10.0, 10.0, 20.0, 20.0], class_id=1)], 320, 200)) == 2


def test_the_strict_rule_checks_corners_and_leaves_detections_at_the_threshold_alone():
    a = detection(0.3, [10.0, 10.0, 20.0, 20.0])
    close = detection(0.300004, [10.0, 10.005, 20.0, 20.0])
    assert unmatched_within([a], [close], 320, 200, threshold=0.2, score_tolerance=1e-5, corner_px=0.01) == []
    far = detection(0.3, [10.0, 10.02, 20.0, 20.0])
    assert len(unmatched_within([a], [far], 320, 200, threshold=0.2, score_tolerance=1e-5, corner_px=0.01)) == 2
    at_threshold = detection(0.200005, [10.0, 10.0, 20.0, 20.0])
    assert unmatched_within([at_threshold], [], 320, 200, threshold=0.2, score_tolerance=1e-5, corner_px=0.01) == []
