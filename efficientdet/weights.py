"""Checkpoint files: safe loading and the network sized by a checkpoint's own heads."""

from __future__ import annotations

import os

import torch

from .config import get_config
from .model import EfficientDet

BOX_HEAD_KEY = "regressor.header.pointwise_conv.conv.weight"
CLASS_HEAD_KEY = "classifier.header.pointwise_conv.conv.weight"


class CheckpointError(ValueError):
    """A checkpoint file that is not an EfficientDet state dict of the expected coefficient."""


def load_state_dict(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a plain state dict without running any code from the file (weights_only=True)."""
    try:
        state_dict = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise CheckpointError(f"{path} is not a loadable weights-only PyTorch checkpoint: {error}") from error
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return state_dict


def head_shape(state_dict: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(num_classes, num_anchors) from the sizes of the output layers."""
    try:
        box_outputs = state_dict[BOX_HEAD_KEY].shape[0]
        class_outputs = state_dict[CLASS_HEAD_KEY].shape[0]
    except KeyError as error:
        raise CheckpointError(f"not an EfficientDet checkpoint: missing {error.args[0]}") from error
    num_anchors = box_outputs // 4
    if box_outputs % 4 or class_outputs % num_anchors:
        raise CheckpointError(f"inconsistent head sizes: {box_outputs} box outputs, {class_outputs} class outputs")
    return class_outputs // num_anchors, num_anchors


def build_from_state_dict(state_dict: dict[str, torch.Tensor], compound_coef: int) -> EfficientDet:
    """An EfficientDet sized by the checkpoint's heads, with its weights loaded strictly."""
    num_classes, num_anchors = head_shape(state_dict)
    model = EfficientDet(get_config(compound_coef), num_classes=num_classes, num_anchors=num_anchors)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint does not match efficientdet-d{compound_coef} (wrong compound coefficient?): "
            f"{str(error).splitlines()[0]}") from error
    return model.eval()
