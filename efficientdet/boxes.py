"""Box decoding and per-image post-processing (threshold, class-aware NMS, back to image pixels)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms


def decode_boxes(anchors: torch.Tensor, regression: torch.Tensor) -> torch.Tensor:
    """Apply (dy, dx, dh, dw) offsets to (y1, x1, y2, x2) anchors; returns (x1, y1, x2, y2)."""
    y_center_a = (anchors[..., 0] + anchors[..., 2]) / 2
    x_center_a = (anchors[..., 1] + anchors[..., 3]) / 2
    height_a = anchors[..., 2] - anchors[..., 0]
    width_a = anchors[..., 3] - anchors[..., 1]
    width = regression[..., 3].exp() * width_a
    height = regression[..., 2].exp() * height_a
    y_center = regression[..., 0] * height_a + y_center_a
    x_center = regression[..., 1] * width_a + x_center_a
    return torch.stack([x_center - width / 2.0, y_center - height / 2.0,
                        x_center + width / 2.0, y_center + height / 2.0], dim=-1)


def canvas_candidates(class_logits: torch.Tensor, regression: torch.Tensor, anchors: torch.Tensor, canvas_size: int,
                      score_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes in canvas pixels, scores, class ids) of one image's anchors above the threshold, in anchor order.

    The score of an anchor is its best class probability. Only anchors above the threshold are decoded, in float32
    whatever the network's dtype; boxes are clipped to the canvas' last pixel, as in the reference implementation.
    """
    best_logit = class_logits.amax(dim=1).float()
    candidates = torch.nonzero(torch.sigmoid(best_logit) > score_threshold).squeeze(1)
    scores, classes = torch.sigmoid(class_logits[candidates].float()).max(dim=1)
    boxes = decode_boxes(anchors[candidates].float(), regression[candidates].float())
    boxes[:, :2] = boxes[:, :2].clamp(min=0)
    boxes[:, 2:] = boxes[:, 2:].clamp(max=canvas_size - 1)
    return boxes, scores, classes


# The first prefix `class_aware_nms` tries for `limit` kept boxes, as a multiple of `limit`, and its growth factor.
FIRST_PREFIX_PER_KEPT = 4
PREFIX_GROWTH = 4


def class_aware_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float,
                    limit: int | None = None, counted: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the boxes that greedy NMS keeps within each class, best first, equal scores in index order.

    Within a class, boxes are taken by score, equal scores in index order (torchvision's `batched_nms`, whose NMS
    sorts stably). With `limit`, it stops once the first `limit` kept boxes that `counted` marks (every box when
    None) are known, and returns the kept boxes up to them: the same as the whole NMS's first ones, since greedy NMS
    keeps or drops a box on the boxes scored above it alone. So NMS runs on growing prefixes of the boxes by score
    (never cutting between equal scores), which pays when thousands of candidates pass the score threshold and a
    request wants a hundred detections.
    """
    ranked_scores, order = torch.sort(scores, descending=True, stable=True)
    size = len(order) if limit is None else min(FIRST_PREFIX_PER_KEPT * max(limit, 1), len(order))
    while True:
        if size < len(order):  # every box scored as the prefix's last one belongs to the prefix
            size = int(torch.searchsorted(-ranked_scores, -ranked_scores[size - 1], right=True))
        prefix = order[:size]
        kept = best_first(prefix[batched_nms(boxes[prefix], scores[prefix], classes[prefix], iou_threshold)], scores)
        if limit is None or size == len(order):
            return kept
        found = torch.nonzero(counted[kept]).squeeze(1) if counted is not None else torch.arange(len(kept))
        if len(found) >= limit:
            return kept[:int(found[limit - 1]) + 1] if limit > 0 else kept[:0]
        size = min(PREFIX_GROWTH * size, len(order))


def best_first(indices: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The indices by descending score, equal scores in index order."""
    indices = indices.sort().values
    return indices[torch.argsort(scores[indices], descending=True, stable=True)]


def select_detections(class_logits: torch.Tensor, regression: torch.Tensor, anchors: torch.Tensor,
                      canvas_size: int, score_threshold: float,
                      iou_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes in canvas pixels, scores, class ids) of one image, best first (equal scores in anchor order):
    `canvas_candidates`, then class-aware NMS over all of them."""
    boxes, scores, classes = canvas_candidates(class_logits, regression, anchors, canvas_size, score_threshold)
    keep = class_aware_nms(boxes, scores, classes, iou_threshold)
    return boxes[keep], scores[keep], classes[keep]


def select_batch_detections(class_logits: torch.Tensor, regression: torch.Tensor, anchors: torch.Tensor,
                            canvas_size: int, score_thresholds: Sequence[float],
                            iou_thresholds: Sequence[float]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`select_detections` for a whole batch at once, with the same results image by image: thresholds as
    one tensor, one decode of every candidate, one class-aware `batched_nms` per distinct IoU threshold (its
    groups are image × class), so a batch costs a few kernel launches instead of a few per image. For the GPU:
    on CPU the per-image loop is faster, since torchvision's batched_nms falls back to one NMS per group above
    4 000 boxes."""
    count, _, num_classes = class_logits.shape
    thresholds = torch.tensor(score_thresholds, dtype=torch.float32, device=class_logits.device)
    best_logit = class_logits.amax(dim=2).float()
    images, candidates = torch.nonzero(torch.sigmoid(best_logit) > thresholds[:, None], as_tuple=True)
    scores, classes = torch.sigmoid(class_logits[images, candidates].float()).max(dim=1)
    boxes = decode_boxes(anchors[candidates].float(), regression[images, candidates].float())
    boxes[:, :2] = boxes[:, :2].clamp(min=0)
    boxes[:, 2:] = boxes[:, 2:].clamp(max=canvas_size - 1)
    kept_parts = []
    for iou in sorted(set(iou_thresholds)):
        wanted = [i for i, value in enumerate(iou_thresholds) if value == iou]
        in_group = torch.nonzero(torch.isin(images, torch.tensor(wanted, device=images.device))).squeeze(1)
        keep = batched_nms(boxes[in_group], scores[in_group], images[in_group] * num_classes + classes[in_group], iou)
        kept_parts.append(in_group[keep])
    kept = torch.cat(kept_parts) if kept_parts else images.new_zeros(0)
    kept = best_first(kept, scores)  # candidates are in image, then anchor order
    per_image = images[kept]
    return [(boxes[kept[per_image == i]], scores[kept[per_image == i]], classes[kept[per_image == i]])
            for i in range(count)]


def to_image_pixels(boxes: torch.Tensor, scale_x: float, scale_y: float, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo the letterbox scaling, clip to the image, and return (boxes, mask of non-empty boxes)."""
    boxes = boxes.clone()
    boxes[:, 0::2] = (boxes[:, 0::2] / scale_x).clamp(0, width)
    boxes[:, 1::2] = (boxes[:, 1::2] / scale_y).clamp(0, height)
    non_empty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, non_empty
