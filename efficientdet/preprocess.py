"""Letterboxing: resize the longer side to the network input size, pad bottom/right with zeros."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed on the square network canvas."""

    width: int
    height: int
    resized_width: int
    resized_height: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.height


def letterbox_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the longer side to `size`, the other truncated to an integer
    (as the reference does) but at least one pixel, so that a 1×600 strip still has a row to show."""
    if width > height:
        return size, max(1, int(size / width * height))
    return max(1, int(size / height * width)), size


def letterbox(image: np.ndarray, size: int, out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Normalised (size, size, 3) float32 canvas of an RGB uint8 (H, W, 3) image.

    The image is resized as float32 pixels (OpenCV bilinear), then normalised with the ImageNet
    mean and std; the padding is zero after normalisation. `out` may supply the canvas.
    """
    height, width = image.shape[:2]
    resized_width, resized_height = letterbox_size(width, height, size)
    pixels = image.astype(np.float32)
    if (resized_width, resized_height) != (width, height):
        pixels = cv2.resize(pixels, (resized_width, resized_height), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((size, size, 3), dtype=np.float32) if out is None else out
    if not canvas.flags.c_contiguous:
        raise ValueError("the canvas must be C-contiguous")
    canvas[resized_height:] = 0
    canvas[:resized_height, resized_width:] = 0
    # Each row's pixels as one run of width × 3 values, the mean and std repeated along it: the same
    # arithmetic as broadcasting over the 3 channels, in long inner loops instead of loops of 3.
    rows = canvas.reshape(size, size * 3)[:resized_height, :resized_width * 3]
    np.divide(pixels.reshape(resized_height, -1), 255, out=rows)
    rows -= np.tile(MEAN, resized_width)
    rows /= np.tile(STD, resized_width)
    return canvas, Letterbox(width, height, resized_width, resized_height)


@functools.cache
def normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MEAN and STD as (3, 1, 1) tensors on a device, copied there once rather than for every image."""
    return (torch.from_numpy(MEAN).to(device).reshape(3, 1, 1), torch.from_numpy(STD).to(device).reshape(3, 1, 1))


def letterbox_tensor(image: torch.Tensor, size: int, out: torch.Tensor) -> Letterbox:
    """Letterbox an RGB uint8 (3, H, W) tensor into `out`, a (3, size, size) tensor on the same device in any
    float dtype and memory format, with torch ops: for images already on the GPU (decoded there, or uploaded
    as uint8, a quarter of the bytes of float32).

    The same rule as `letterbox`: bilinear resizing of the float32 pixels with half-pixel centres and no
    antialiasing (what cv2.resize INTER_LINEAR does), then the ImageNet normalisation, zeros elsewhere.
    """
    _, height, width = image.shape
    resized_width, resized_height = letterbox_size(width, height, size)
    pixels = image.unsqueeze(0).float()
    if (resized_width, resized_height) != (width, height):
        pixels = F.interpolate(pixels, size=(resized_height, resized_width), mode="bilinear", align_corners=False,
                               antialias=False)
    mean, std = normalisation(pixels.device)
    out[:, resized_height:] = 0
    out[:, :resized_height, resized_width:] = 0
    out[:, :resized_height, :resized_width] = pixels[0].div_(255).sub_(mean).div_(std)
    return Letterbox(width, height, resized_width, resized_height)
