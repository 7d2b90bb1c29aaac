"""Generated photographs: images with a photograph's statistics, for the tests and the benchmark."""

from __future__ import annotations

import numpy as np
from PIL import Image


def natural_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image with a photograph's statistics (noise summed over scales, a 1/f spectrum): with the
    reference checkpoint it gives hundreds of detections, where the sample photograph gives tens."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((height, width, 3))
    cells = 4
    while cells <= max(width, height):
        noise = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        pixels += np.asarray(Image.fromarray(noise).resize((width, height), Image.Resampling.BILINEAR), dtype=float)
        cells *= 2
    pixels = (pixels - pixels.mean()) / pixels.std() * 50 + 120
    return np.clip(pixels, 0, 255).astype(np.uint8)
