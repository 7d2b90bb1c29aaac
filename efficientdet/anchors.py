"""Anchor boxes, computed once per (input size, device, dtype) and cached."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

import torch


def generate_anchors(input_size: int, levels: Sequence[int], anchor_scale: float,
                     scales: Sequence[float], ratios: Sequence[tuple[float, float]]) -> torch.Tensor:
    """Anchors (A, 4) as (y1, x1, y2, x2) in input pixels, in float64.

    Order: level (P3 first), feature-map row, column, then product(scales, ratios).
    """
    per_level = []
    for level in levels:
        stride = 2**level
        if input_size % stride:
            raise ValueError(f"input size {input_size} is not a multiple of stride {stride}")
        centers = torch.arange(stride / 2, input_size, stride, dtype=torch.float64)
        cy, cx = torch.meshgrid(centers, centers, indexing="ij")
        half = torch.tensor(
            [[anchor_scale * stride * scale * ry / 2.0, anchor_scale * stride * scale * rx / 2.0]
             for scale, (rx, ry) in itertools.product(scales, ratios)],
            dtype=torch.float64)
        cy, cx = cy.reshape(-1, 1), cx.reshape(-1, 1)
        boxes = torch.stack([cy - half[:, 0], cx - half[:, 1], cy + half[:, 0], cx + half[:, 1]], dim=-1)
        per_level.append(boxes.reshape(-1, 4))
    return torch.cat(per_level)


class AnchorCache:
    """Thread-safe cache of anchors keyed by (input size, device, dtype)."""

    def __init__(self, levels: Sequence[int], anchor_scale: float,
                 scales: Sequence[float], ratios: Sequence[tuple[float, float]]) -> None:
        self.levels = tuple(levels)
        self.anchor_scale = anchor_scale
        self.scales = tuple(scales)
        self.ratios = tuple(tuple(r) for r in ratios)
        self._cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self._lock = threading.Lock()

    def get(self, input_size: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        key = (input_size, torch.device(device), dtype)
        with self._lock:
            anchors = self._cache.get(key)
            if anchors is None:
                anchors = generate_anchors(input_size, self.levels, self.anchor_scale, self.scales, self.ratios)
                anchors = anchors.to(dtype).to(device)
                self._cache[key] = anchors
            return anchors
