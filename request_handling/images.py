"""Decoding image bytes into RGB uint8 arrays, with size limits checked before the pixels are decoded."""

from __future__ import annotations

import io
import math
import warnings
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import bad_request, too_large

HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
DCT_SCALED_FORMATS = {"JPEG", "MPO"}  # MPO: the JPEG files of cameras that store several pictures


class DecodedImage(NamedTuple):
    """RGB pixels, and the (width, height) of the whole image, which a reduced decode makes larger."""

    pixels: np.ndarray
    width: int
    height: int


def decode_image(data: bytes, max_bytes: int, max_pixels: int, source: str = "image",
                 reduce_to: int | None = None) -> DecodedImage:
    """(H, W, 3) uint8 RGB, EXIF orientation applied, first frame of animations, alpha dropped.

    With `reduce_to`, a JPEG is decoded at the smallest of 1/2, 1/4 or 1/8 scale whose longer side
    still has `reduce_to` pixels (the DCT does the scaling, which is faster and changes pixels slightly).
    """
    if len(data) > max_bytes:
        raise too_large(f"{source} is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise too_large(f"{source} is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
            if reduce_to is not None and image.format in DCT_SCALED_FORMATS:
                scale = reduce_to / max(width, height)
                image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
            image.load()
            if image.getexif().get(ExifTags.Base.Orientation) in TRANSPOSING_ORIENTATIONS:
                width, height = height, width
            image = ImageOps.exif_transpose(image)
            return DecodedImage(_to_rgb(image), width, height)
    except UnidentifiedImageError:
        raise bad_request(f"{source} is not a decodable image (JPEG, PNG, GIF, TIFF, WebP, BMP ...)") from None
    except Image.DecompressionBombError:
        raise too_large(f"{source} has too many pixels to decode") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise bad_request(f"{source} could not be decoded: {error}") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in HIGH_BIT_DEPTH_MODES:
        gray = (np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
    elif image.mode == "F":
        gray = np.asarray(image).clip(0, 255).astype(np.uint8)
    else:
        return np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
