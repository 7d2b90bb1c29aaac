"""Decoding image bytes into RGB uint8 arrays, with size limits checked before the pixels are decoded."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import bad_request, too_large

HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def decode_image(data: bytes, max_bytes: int, max_pixels: int, source: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied, first frame of animations, alpha dropped."""
    if len(data) > max_bytes:
        raise too_large(f"{source} is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise too_large(f"{source} is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except UnidentifiedImageError:
        raise bad_request(f"{source} is not a decodable image (JPEG, PNG, GIF, TIFF, WebP, BMP ...)") from None
    except Image.DecompressionBombError:
        raise too_large(f"{source} has too many pixels to decode") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise bad_request(f"{source} could not be decoded: {error}") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in HIGH_BIT_DEPTH_MODES:
        gray = (np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if image.mode == "F":
        gray = np.asarray(image).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    return np.asarray(image.convert("RGB"))
