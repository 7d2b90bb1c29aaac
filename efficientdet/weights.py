"""Checkpoint files: safe loading, shape inference, download, and deterministic untrained weights."""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.request
from pathlib import Path

import torch

from .config import get_config
from .model import EfficientDet

log = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/zylo117/Yet-Another-Efficient-Pytorch/releases/download"
# D0–D6 were published in release 1.0, D7 and D8 ("D7X") in release 1.2.
RELEASE_OF_COEF = {coef: "1.0" if coef <= 6 else "1.2" for coef in range(9)}

BOX_HEAD_KEY = "regressor.header.pointwise_conv.conv.weight"
CLASS_HEAD_KEY = "classifier.header.pointwise_conv.conv.weight"


class CheckpointError(ValueError):
    """A checkpoint file that is not an EfficientDet state dict of the expected coefficient."""


def weights_url(compound_coef: int) -> str:
    get_config(compound_coef)
    return f"{RELEASE_URL}/{RELEASE_OF_COEF[compound_coef]}/efficientdet-d{compound_coef}.pth"


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


def download_weights(compound_coef: int, directory: str | os.PathLike) -> Path:
    """Download the published checkpoint into `directory` (atomically) and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"efficientdet-d{compound_coef}.pth"
    url = weights_url(compound_coef)
    log.info("downloading %s", url)
    with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".part") as part:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    part.write(chunk)
        except BaseException:
            os.unlink(part.name)
            raise
    load_state_dict(part.name)
    os.replace(part.name, target)
    return target


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
