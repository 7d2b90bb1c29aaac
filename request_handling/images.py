"""Decoding image bytes into RGB uint8 arrays, with size limits checked before the pixels are decoded."""

from __future__ import annotations

import io
import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from .errors import RequestError, bad_request, too_large

HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
ORIENTATIONS = range(1, 9)
DEVICE_DECODABLE_MODES = {"RGB", "L"}  # a JPEG's YCbCr or grayscale; CMYK and YCCK go to the CPU decoder
DCT_SCALED_FORMATS = {"JPEG", "MPO"}  # MPO: the JPEG files of cameras that store several pictures


class DecodedImage(NamedTuple):
    """RGB pixels, and the (width, height) of the whole image, which a reduced decode makes larger. A JPEG
    left for the device decoder has no pixels yet: its bytes and EXIF orientation instead."""

    pixels: np.ndarray | torch.Tensor | None
    width: int
    height: int
    jpeg: bytes | None = None
    orientation: int = 1


def image_too_large(source: str, limit: int, size: int | None = None) -> RequestError:
    """The 413 of an image over MAX_IMAGE_BYTES, its size named where it is known."""
    return too_large(f"{source} is {'larger than the limit' if size is None else f'{size} bytes; the limit is'} "
                     f"MAX_IMAGE_BYTES={limit}")


def _open_checked(data: bytes, max_bytes: int, max_pixels: int, source: str) -> Image.Image:
    """The image's header, read without decoding pixels, within the byte and pixel limits."""
    if len(data) > max_bytes:
        raise image_too_large(source, max_bytes, len(data))
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if width * height > max_pixels:
        raise too_large(f"{source} is {width}x{height} = {width * height} pixels; the limit is MAX_IMAGE_PIXELS={max_pixels}")
    return image


def jpeg_for_device(data: bytes, max_bytes: int, max_pixels: int, source: str = "image") -> DecodedImage | None:
    """A JPEG the device decoder takes (YCbCr or grayscale), its header checked against the limits and its
    pixels left undecoded; None for anything else, which `decode_image` decodes on the CPU."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open_checked(data, max_bytes, max_pixels, source)
            if image.format != "JPEG" or image.mode not in DEVICE_DECODABLE_MODES:
                return None
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None  # decode_image says what is wrong
    width, height = image.size
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return DecodedImage(None, width, height, jpeg=data, orientation=orientation if orientation in ORIENTATIONS else 1)


def decode_jpegs_on_device(images: list[DecodedImage], device: torch.device) -> list[torch.Tensor | None]:
    """(3, H, W) uint8 RGB tensors on the device, EXIF orientation applied, for `jpeg_for_device` images, in one
    batched call (nvJPEG on a GPU; torchvision's libjpeg-turbo on CPU); None where the decoder refuses one."""
    data = [torch.frombuffer(bytearray(image.jpeg), dtype=torch.uint8) for image in images]
    try:
        decoded: list[torch.Tensor | None] = list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # the batch fails as a whole: find the images that do decode
        decoded = []
        for one in data:
            try:
                decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
    return [None if pixels is None else oriented(pixels, image.orientation) for pixels, image in zip(decoded, images)]


def oriented(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """(3, H, W) pixels turned as their EXIF orientation says they are shown (what PIL's exif_transpose does)."""
    if orientation in (5, 7):  # transpose, transverse: the axes swap, then 7 also turns by 180°
        pixels = pixels.transpose(1, 2)
    flips = {2: [2], 3: [1, 2], 4: [1], 7: [1, 2]}.get(orientation)
    if flips:
        return pixels.flip(flips)
    if orientation in (6, 8):  # 6: turned 90° clockwise to be shown; 8: counter-clockwise
        return torch.rot90(pixels, -1 if orientation == 6 else 1, dims=(1, 2))
    return pixels


def decode_image(data: bytes, max_bytes: int, max_pixels: int, source: str = "image",
                 reduce_to: int | None = None) -> DecodedImage:
    """(H, W, 3) uint8 RGB, EXIF orientation applied, first frame of animations, alpha dropped.

    With `reduce_to`, a JPEG is decoded at the smallest of 1/2, 1/4 or 1/8 scale whose longer side
    still has `reduce_to` pixels (the DCT does the scaling, which is faster and changes pixels slightly).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open_checked(data, max_bytes, max_pixels, source)
            width, height = image.size
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
