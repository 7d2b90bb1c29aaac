"""An entry's media, from request to decoded pixels: fetched (inline bytes or S3), told image from video by its
first bytes, held to the size limits (one message each), and opened: an image decoded (or, for the device decoder,
only its header read), a clip's sampled frames decoded one by one as the pipeline asks for them.

This module is the one place that decides what a medium is and how large it may be; `s3` only talks to S3 (and
reads an object by byte ranges), `images` and `video` only decode.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .bodies import SAMPLING_FIELDS, EntryRequest
from .errors import RequestError, bad_request, not_found, too_large
from .images import DecodedImage, decode_image, decode_jpegs_on_device, image_too_large, jpeg_for_device
from .pipeline import Frame
from .placement import Placement
from .settings import Settings
from .video import Video

SIGNATURE_BYTES = 200  # enough for an M2TS file's second sync byte (192-byte packets, the first at 4)
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
QUICKTIME_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")  # MP4 and MOV files start with one
VIDEO_MAGIC = {b"\x1a\x45\xdf\xa3": "Matroska/WebM", b"\x00\x00\x01\xba": "MPEG program stream",
               b"\x06\x0e\x2b\x34": "MXF", b"FLV\x01": "FLV", b"OggS": "Ogg", b"\x30\x26\xb2\x75": "ASF/WMV"}
RANGED_READ_AHEAD = (256 * 1024, 16 * 1024 * 1024)  # bytes: the first range after a seek, the largest
# The names a listing picks (python -m detect's folders and S3 prefixes, deploy batch --clips); what a picked file
# is, is still told by its bytes. Clips: MP4/MOV, Matroska/WebM, AVCHD, HDV, JVC's .tod and other MPEG-TS, MPEG-PS
# (DVDs, JVC's .mod), AVI, MXF, FLV, Ogg, ASF, a DV camcorder's raw DV.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".qt", ".3gp", ".webm", ".mkv", ".mts", ".m2ts", ".m2t", ".ts", ".mpg",
                  ".mpeg", ".vob", ".mod", ".tod", ".avi", ".mxf", ".flv", ".ogv", ".wmv", ".asf", ".dv"}


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def is_clip_name(name: str) -> bool:
    """A video file's name or S3 key, by its suffix, whatever the case."""
    return PurePosixPath(name).suffix.lower() in VIDEO_SUFFIXES


def is_image(head: bytes) -> bool:
    """Whether these first bytes open an image file (JPEG, PNG, GIF, BMP, TIFF, WebP): images are told first."""
    return head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def video_container(head: bytes) -> str | None:
    """The container these first bytes open, or None: MP4/MOV (an ISO base media box), Matroska/WebM, MPEG-TS (a
    sync byte every 188 bytes) or M2TS (every 192), MPEG-PS, AVI, MXF, FLV, Ogg, ASF, raw DV (a DIF header block)."""
    if is_image(head):
        return None
    if head[4:8] in QUICKTIME_ATOMS:
        return "MP4/MOV"
    if head[:1] == b"\x47" and head[188:189] == b"\x47":
        return "MPEG transport stream"
    if head[4:5] == b"\x47" and head[196:197] == b"\x47":
        return "M2TS"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:3] == b"\x1f\x07\x00" and head[3:4] in (b"\x3f", b"\xbf"):  # 525/60 or 625/50 lines
        return "DV"
    return next((name for magic, name in VIDEO_MAGIC.items() if head.startswith(magic)), None)


def is_video(head: bytes) -> bool:
    """Whether these first bytes open a clip (`video_container`); anything else is decoded as an image."""
    return video_container(head) is not None


def clip_too_large(source: str, limit: int, size: int | None = None) -> RequestError:
    """The 413 of a clip over MAX_VIDEO_BYTES: inline bytes, or what was read of an S3 object."""
    return too_large(f"{source} is {'read beyond the limit' if size is None else f'{size} bytes; the limit is'} "
                     f"MAX_VIDEO_BYTES={limit}")


def bounded_image(body: BinaryIO, head: bytes, size: int | None, max_bytes: int, source: str) -> bytes:
    """An image's bytes: `head` and the rest of `body`, at most max_bytes in all (413), not empty (400)."""
    if size is not None and size > max_bytes:
        raise image_too_large(source, max_bytes, size)
    data = head + body.read(max_bytes + 1 - len(head))
    if len(data) > max_bytes:
        raise image_too_large(source, max_bytes)
    if not data:
        raise bad_request(f"{source} is empty (0 bytes)")
    return data


ClipMedia = Path | BinaryIO  # what a clip is opened from: a local file, or a seekable binary file object


def fetch_media(client, bucket: str, key: str, max_image_bytes: int, max_video_bytes: int) -> bytes | ClipMedia:
    """An S3 object: an image's bytes, or a clip as a seekable reader that fetches by byte ranges what the decoder
    reads, at most MAX_VIDEO_BYTES in all (a clip is never spooled or held whole). RequestError 404/403/502/503/504
    when S3 cannot provide it, 413 over the limits, 400 for an empty object."""
    from . import s3  # boto3 is imported at the first S3 read: bodies with inline images never need it

    source = f"s3://{bucket}/{key}"
    with s3.s3_errors(source):
        body, size, etag = s3.open_object(client, bucket, key)
        with body:
            head = body.read(SIGNATURE_BYTES)
            if is_video(head):
                return s3.RangedObject(client, bucket, key, size, etag, source, RANGED_READ_AHEAD, max_video_bytes,
                                       lambda: clip_too_large(source, max_video_bytes))
            return bounded_image(body, head, size, max_image_bytes, source)


def inline_media(data: bytes, max_video_bytes: int, source: str) -> bytes | ClipMedia:
    """Bytes sent in the request: an image's as they are, a clip's as a file object over them (no copy)."""
    if not is_video(data[:SIGNATURE_BYTES]):
        return data
    if len(data) > max_video_bytes:
        raise clip_too_large(source, max_video_bytes, len(data))
    return io.BytesIO(data)


def local_media(path: Path, max_image_bytes: int, source: str) -> bytes | ClipMedia:
    """A local file (the CLI's): an image's bytes, or the clip's path, opened in place (never read whole)."""
    try:
        with path.open("rb") as file:
            head = file.read(SIGNATURE_BYTES)
            if is_video(head):
                return path
            return bounded_image(file, head, path.stat().st_size, max_image_bytes, source)
    except OSError as error:
        raise not_found(f"{source}: {error.strerror}") from None


def may_be_clip(request: EntryRequest) -> bool:
    """A clip sent inline, or an entry with sampling options: a server does not merge it with other clients' single
    images (an S3 clip without them is told only once fetched, and is then detected in the merged batch, correctly)."""
    if request.inline is not None:
        return is_video(request.inline[:SIGNATURE_BYTES])
    return any(getattr(request, name) is not None for name in SAMPLING_FIELDS)


class MediaLoader:
    """Fetches and decodes entries for the pipeline: on the fetch pool (`load`) and, for JPEGs left to the device
    decoder, a batch at a time (`decode_on_device`). Safe to share between threads."""

    def __init__(self, settings: Settings, placement: Placement) -> None:
        self.settings = settings
        self.placement = placement
        self._s3_client = None
        self._s3_lock = threading.Lock()

    @property
    def s3(self):
        """The S3 client, made at the first S3 read (so that a server that never reads S3 never looks for AWS
        credentials)."""
        from . import s3

        with self._s3_lock:
            if self._s3_client is None:
                settings = self.settings
                self._s3_client = s3.make_client(settings.s3_connect_timeout, settings.s3_read_timeout,
                                                 settings.s3_max_attempts, settings.s3_max_concurrency)
            return self._s3_client

    def fetch(self, request: EntryRequest, source: str) -> bytes | ClipMedia:
        """An entry's image bytes, or what its clip is opened from."""
        if request.inline is not None:
            return inline_media(request.inline, self.settings.max_video_bytes, source)
        if request.path is not None:
            return local_media(request.path, self.settings.max_image_bytes, source)
        return fetch_media(self.s3, request.bucket, request.key, self.settings.max_image_bytes,
                           self.settings.max_video_bytes)

    def load(self, frame: Frame) -> Frame | Iterator[Frame]:
        """Fetch and decode one entry's image; for a clip (told by its bytes), open it here and give its sampled
        frames, decoded one by one as they are asked for. JPEGs for the device decoder are only read to their
        header here: a batch's are decoded together on the device (`decode_on_device`)."""
        start = time.perf_counter()
        source = frame.source or "request body"
        settings = self.settings
        try:
            media = self.fetch(frame.request.request, source)
            fetched = time.perf_counter()
            if not isinstance(media, bytes):
                clip = Video(media, source, settings.max_image_pixels)
                return self._clip_frames(replace(frame, clip=clip.info, fetch_seconds=fetched - start), clip)
            image = jpeg_for_device(media, settings.max_image_bytes, settings.max_image_pixels, source) \
                if self.placement.device_jpeg_decode else None
            if image is None:
                image = decode_image(media, settings.max_image_bytes, settings.max_image_pixels, source,
                                     self.placement.reduced_jpeg_side)
        except RequestError as error:
            return replace(frame, fetch_seconds=time.perf_counter() - start).failed(error)
        return replace(frame, image=image, fetch_seconds=fetched - start, decode_seconds=time.perf_counter() - fetched)

    @staticmethod
    def _clip_frames(frame: Frame, clip: Video) -> Iterator[Frame]:
        """An opened clip's frames, each decoded when the pipeline asks for it (its decode time is the wait for
        it); the clip is closed when the last one is done (or the pipeline stops asking)."""
        clock, fetch_seconds = time.perf_counter(), frame.fetch_seconds  # the clip's fetch counts once, on its first frame
        sampled = None
        for sampled in clip.frames(frame.request.sampling):
            at = replace(frame, frame_index=sampled.index, time=sampled.time, fetch_seconds=fetch_seconds,
                         decode_seconds=time.perf_counter() - clock, rest_of_clip=sampled.rest_of_clip)
            if sampled.error is not None:
                yield at.failed(sampled.error)
            else:
                height, width = sampled.pixels.shape[:2]
                yield replace(at, image=DecodedImage(sampled.pixels, width, height))
            clock, fetch_seconds = time.perf_counter(), 0.0
        if sampled is None:  # the sampling picked no frame: the entry fails, saying why
            yield replace(frame, rest_of_clip=True).failed(bad_request(
                f"{frame.source or 'the video'} has no frame in the sampled range (its frames run to "
                f"{clip.info.duration:.3f} s)"))

    def decode_on_device(self, frames: list[Frame]) -> list[Frame]:
        """A batch with its JPEGs left for the device decoder decoded there, in one call; what that decoder
        refuses is decoded on the CPU, and an image neither can decode fails in its place. The call's time is
        shared among the frames it decoded."""
        waiting = [i for i, frame in enumerate(frames) if frame.image.pixels is None]
        if not waiting:
            return frames
        start = time.perf_counter()
        decoded = decode_jpegs_on_device([frames[i].image for i in waiting], self.placement.device)
        ready = list(frames)
        for i, pixels in zip(waiting, decoded):
            frame = frames[i]
            try:
                image = frame.image._replace(pixels=pixels, jpeg=None) if pixels is not None else decode_image(
                    frame.image.jpeg, self.settings.max_image_bytes, self.settings.max_image_pixels,
                    frame.source or "request body")
                ready[i] = replace(frame, image=image)
            except RequestError as error:
                ready[i] = frame.failed(error)
        share = (time.perf_counter() - start) / len(waiting)
        return [replace(f, decode_seconds=f.decode_seconds + share) if i in waiting else f for i, f in enumerate(ready)]
