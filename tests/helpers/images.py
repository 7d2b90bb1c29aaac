"""Image payloads for tests: real encodings made with Pillow, and deliberately broken ones."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import ExifTags, Image

from helpers import SAMPLE_IMAGE


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def gradient(width: int = 320, height: int = 200) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2))


def png(width: int, height: int, color_type: int, compressed_rows: bytes) -> bytes:
    """A PNG file from its IHDR fields and already-compressed image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", compressed_rows) + chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height RGB pixels but carries almost no data."""
    return png(width, height, 2, zlib.compress(b"\x00" * 16))


def sixteen_bit_png() -> bytes:
    values = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    return encode(Image.fromarray(values), "PNG")


def decompression_bomb_png(side: int = 20_000) -> bytes:
    """A real, valid PNG of side×side black pixels: small on the wire, gigabytes once decoded."""
    row = b"\x00" + b"\x00" * side  # filter byte + one grayscale byte per pixel
    compressor = zlib.compressobj(9)
    return png(side, side, 0, b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush())


def jpeg_with_exif(size: int) -> bytes:
    """A 320×200 JPEG carrying an EXIF block of about `size` bytes."""
    exif = Image.Exif()
    exif[0x010E] = "x" * size  # ImageDescription
    return encode(gradient(), "JPEG", exif=exif.tobytes())


def video_frame(width: int, height: int, orientation: int | None = None) -> bytes:
    """The sample photograph scaled up to a video frame size, as a JPEG (optionally EXIF-rotated)."""
    exif = Image.Exif()
    if orientation:
        exif[ExifTags.Base.Orientation] = orientation
    frame = Image.open(SAMPLE_IMAGE).resize((width, height), Image.Resampling.BICUBIC)
    return encode(frame, "JPEG", quality=90, exif=exif.tobytes())
