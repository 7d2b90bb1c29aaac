"""Inference-only rewrites of a loaded EfficientDet that leave its outputs unchanged."""

from __future__ import annotations

import torch

from .model import EfficientDet


def optimize_for_inference(model: EfficientDet) -> EfficientDet:
    """Channels-last weights; the eager model is kept as it is otherwise."""
    return model.to(memory_format=torch.channels_last)
