"""Deterministic UNTRAINED weights, so that the serving stack runs offline (their detections are meaningless)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .config import get_config
from .model import EfficientDet

log = logging.getLogger(__name__)


def _standardise_output(head: torch.nn.Module, outputs: torch.Tensor, std: float, mean: float) -> None:
    """Rescale a head's last layer so that its outputs on the calibration image have this mean and std."""
    layer = head.header.pointwise_conv.conv
    observed_mean, observed_std = outputs.mean().item(), outputs.std().item()
    layer.weight.mul_(std / observed_std)
    layer.bias.sub_(observed_mean).mul_(std / observed_std).add_(mean)


def synthetic_images(size: int, count: int = 2) -> torch.Tensor:
    """Normalised images with natural-looking statistics: noise summed over scales (a 1/f spectrum)."""
    images = torch.zeros(count, 3, size, size)
    cells = 4
    while cells <= size:
        noise = torch.randn(count, 3, cells, cells)
        images += torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
        cells *= 2
    images = (images - images.mean()) / images.std()
    images[1:, :, size * 2 // 3:] = 0  # letterbox padding, as a landscape frame leaves it
    return images


@torch.no_grad()
def untrained_state_dict(compound_coef: int, num_classes: int = 90, seed: int = 0,
                         calibration_size: int | None = None) -> dict[str, torch.Tensor]:
    """Deterministic UNTRAINED weights: seeded init, batch-norm statistics and head outputs calibrated
    on a synthetic image so that scores and boxes fall in a realistic range.

    Its detections are meaningless; it exists so that the serving stack can run offline.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        config = get_config(compound_coef)
        model = EfficientDet(config, num_classes=num_classes)
        image = synthetic_images(calibration_size or config.input_size)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model.train()
        model(image)
        model.eval()
        regression, class_logits = model(image)
        _standardise_output(model.regressor, regression, std=0.1, mean=0.0)
        _standardise_output(model.classifier, class_logits, std=0.25, mean=-3.0)
        return {key: value.clone() for key, value in model.state_dict().items()}
    finally:
        torch.random.set_rng_state(generator_state)


def write_untrained_checkpoint(compound_coef: int, path: str | os.PathLike, seed: int = 0) -> Path:
    path = Path(path)
    log.warning("writing UNTRAINED efficientdet-d%d weights to %s: detections will be meaningless", compound_coef, path)
    torch.save(untrained_state_dict(compound_coef, seed=seed), path)
    return path
