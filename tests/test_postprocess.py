"""Fast tier: post-processing as pure functions (no checkpoint, no server)."""

from __future__ import annotations

import math

import pytest
import torch

from efficientdet.boxes import class_aware_nms, decode_boxes, select_detections, to_image_pixels

pytestmark = pytest.mark.unit

ANCHORS = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 60.0]])  # y1 x1 y2 x2


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_zero_offsets_decode_to_the_anchor_as_x1_y1_x2_y2():
    assert decode_boxes(ANCHORS, torch.zeros(3, 4)).tolist() == [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 60, 40]]


def test_select_keeps_the_best_class_per_anchor_above_the_threshold_best_first():
    logits = torch.full((3, 4), logit(0.01))
    logits[0, 2], logits[1, 2], logits[2, 1] = logit(0.9), logit(0.8), logit(0.3)
    boxes, scores, classes = select_detections(logits, torch.zeros(3, 4), ANCHORS, 128, 0.25, 0.5)
    # anchors 0 and 1 overlap fully in class 2: NMS keeps the better one
    assert classes.tolist() == [2, 1] and scores.tolist() == torch.tensor([0.9, 0.3]).tolist()
    assert boxes.tolist() == [[0, 0, 10, 10], [20, 20, 60, 40]]


def test_nms_is_per_class():
    logits = torch.full((3, 4), logit(0.01))
    logits[0, 2], logits[1, 3] = logit(0.9), logit(0.8)
    _, _, classes = select_detections(logits, torch.zeros(3, 4), ANCHORS, 128, 0.25, 0.5)
    assert classes.tolist() == [2, 3]


def test_boxes_are_clipped_to_the_canvas_before_nms_and_to_the_image_after():
    logits = torch.full((1, 2), logit(0.9))
    regression = torch.tensor([[0.0, 0.0, 3.0, 3.0]])  # grows the box far past the canvas
    boxes, _, _ = select_detections(logits, regression, ANCHORS[:1], 64, 0.5, 0.5)
    assert boxes.min() >= 0 and boxes.max() <= 63
    image_boxes, non_empty = to_image_pixels(boxes, 0.5, 0.25, 100, 80)
    assert image_boxes[0].tolist() == [0, 0, 100, 80] and non_empty.tolist() == [True]


def test_nothing_above_the_threshold_gives_empty_tensors():
    boxes, scores, classes = select_detections(torch.full((3, 4), -10.0), torch.zeros(3, 4), ANCHORS, 128, 0.2, 0.2)
    assert boxes.shape == (0, 4) and scores.numel() == classes.numel() == 0


def crowded_candidates(count: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes crowded on a 512 px canvas, as an untrained or low-threshold model leaves thousands of them."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(count, 2, generator=generator) * 480
    sizes = torch.rand(count, 2, generator=generator) * 60 + 4
    scores = torch.rand(count, generator=generator)
    return torch.cat([corners, corners + sizes], dim=1), scores, torch.randint(classes, (count,), generator=generator)


@pytest.mark.parametrize("limit", [1, 10, 100, 1000])
def test_nms_up_to_a_limit_keeps_the_same_first_boxes_as_the_whole_nms(limit):
    boxes, scores, classes = crowded_candidates(6000, classes=5)
    whole = class_aware_nms(boxes, scores, classes, 0.2)
    counted = boxes[:, 0] > 100  # say, the boxes that land inside the image
    first = class_aware_nms(boxes, scores, classes, 0.2, limit, counted=counted)
    assert torch.equal(first, whole[:len(first)])
    assert counted[first].sum() == limit and counted[first[-1]]
    assert torch.equal(class_aware_nms(boxes, scores, classes, 0.2, limit), whole[:limit])


def test_nms_takes_equal_scores_in_index_order_and_never_splits_them_at_a_limit():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 50 + [[100.0, 100.0, 110.0, 110.0]] * 50)
    scores, classes = torch.full((100,), 0.5), torch.zeros(100, dtype=torch.long)
    scores[50:] = 0.25
    assert class_aware_nms(boxes, scores, classes, 0.5).tolist() == [0, 50]
    assert class_aware_nms(boxes, scores, classes, 0.5, limit=1).tolist() == [0]
    assert class_aware_nms(boxes, scores, classes, 0.5, limit=2).tolist() == [0, 50]
    assert class_aware_nms(boxes, scores, classes, 0.5, limit=0).tolist() == []


def test_the_whole_batch_at_once_gives_each_images_own_detections():
    """Random heads for 4 images of 3069 anchors (D0 at 128 px), per-image thresholds and IoUs: the batched
    step returns exactly what the per-image step does, image by image, best first, equal scores in the same order."""
    from efficientdet.anchors import generate_anchors
    from efficientdet.boxes import select_batch_detections
    from efficientdet.config import DEFAULT_ANCHOR_RATIOS, DEFAULT_ANCHOR_SCALES

    generator = torch.Generator().manual_seed(0)
    anchors = torch.as_tensor(generate_anchors(128, (3, 4, 5, 6, 7), 4.0, DEFAULT_ANCHOR_SCALES, DEFAULT_ANCHOR_RATIOS),
                              dtype=torch.float32)
    logits = torch.randn(4, anchors.shape[0], 90, generator=generator) - 4
    regression = torch.randn(4, anchors.shape[0], 4, generator=generator) * 0.3
    logits[2:] = torch.round(logits[2:])  # the last two images with thousands of equal scores
    thresholds, ious = [0.2, 0.5, 0.05, 0.2], [0.2, 0.5, 0.2, 0.7]
    batched = select_batch_detections(logits, regression, anchors, 128, thresholds, ious)
    for i, (boxes, scores, classes) in enumerate(batched):
        alone = select_detections(logits[i], regression[i], anchors, 128, thresholds[i], ious[i])
        assert len(scores) > 0
        assert torch.equal(boxes, alone[0]) and torch.equal(scores, alone[1]) and torch.equal(classes, alone[2])


def test_a_batch_where_nothing_passes_gives_empty_results():
    from efficientdet.boxes import select_batch_detections

    results = select_batch_detections(torch.full((2, 3, 4), -10.0), torch.zeros(2, 3, 4), ANCHORS, 128, [0.2, 0.2],
                                      [0.2, 0.5])
    assert [r[0].shape for r in results] == [(0, 4), (0, 4)]
