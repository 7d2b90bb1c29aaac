"""Box decoding and per-image post-processing (threshold, class-aware NMS, back to image pixels)."""

from __future__ import annotations

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


def select_detections(class_logits: torch.Tensor, regression: torch.Tensor, anchors: torch.Tensor,
                      canvas_size: int, score_threshold: float,
                      iou_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes in canvas pixels, scores, class ids) of one image, best first.

    The score of an anchor is its best class probability. Only anchors above the threshold are
    decoded, in float32 whatever the network's dtype; boxes are clipped to the canvas' last pixel
    before class-aware NMS, as in the reference implementation.
    """
    best_logit = class_logits.amax(dim=1).float()
    candidates = torch.nonzero(torch.sigmoid(best_logit) > score_threshold).squeeze(1)
    scores, classes = torch.sigmoid(class_logits[candidates].float()).max(dim=1)
    boxes = decode_boxes(anchors[candidates].float(), regression[candidates].float())
    boxes[:, :2] = boxes[:, :2].clamp(min=0)
    boxes[:, 2:] = boxes[:, 2:].clamp(max=canvas_size - 1)
    keep = batched_nms(boxes, scores, classes, iou_threshold)
    return boxes[keep], scores[keep], classes[keep]


def to_image_pixels(boxes: torch.Tensor, scale_x: float, scale_y: float, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo the letterbox scaling, clip to the image, and return (boxes, mask of non-empty boxes)."""
    boxes = boxes.clone()
    boxes[:, 0::2] = (boxes[:, 0::2] / scale_x).clamp(0, width)
    boxes[:, 1::2] = (boxes[:, 1::2] / scale_y).clamp(0, height)
    non_empty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, non_empty
