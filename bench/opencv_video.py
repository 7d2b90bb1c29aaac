"""Today's OpenCV clip decoder, kept only so that (f) can time it beside PyAV's in one run: the capture decodes every
frame, seeks by decoding forward, and reads from a file (an inline clip is written to one first). The serving code
no longer uses it; delete this module with the comparison once the figures are in docs/benchmarks.md."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from request_handling.errors import bad_request
from request_handling.results import ClipInfo
from request_handling.video import TIME_TOLERANCE, SampledFrame, Sampling
from request_handling.video import Video as PyAVVideo


def opened(media, source: str, max_pixels: int) -> Video:
    """The OpenCV clip for what `request_handling.media` hands the decoder: a path, or bytes in a file object (the
    frame limit is not checked: the benchmark's clips are within it)."""
    if isinstance(media, Path):
        return Video(media, source, owned=False)
    handle, name = tempfile.mkstemp(prefix="bench-opencv-", suffix=".bin")
    with os.fdopen(handle, "wb") as out:
        media.seek(0)
        out.write(media.read())
    return Video(Path(name), source)


class Video:
    """An opened clip (a file; removed when closed if `owned`); RequestError 400 when it cannot be opened."""

    def __init__(self, path: Path, source: str, owned: bool = True) -> None:
        self.path, self.source, self.owned = path, source, owned
        self.capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self.capture.isOpened():
            self.close()
            raise bad_request(f"{source} is not a video this server can open (no decodable video stream)")
        get = self.capture.get
        fourcc = int(get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace").strip("\x00 ")
        fps, count = get(cv2.CAP_PROP_FPS), int(get(cv2.CAP_PROP_FRAME_COUNT))
        self._last_interval = 0.0
        self.info = ClipInfo(int(get(cv2.CAP_PROP_FRAME_WIDTH)), int(get(cv2.CAP_PROP_FRAME_HEIGHT)),
                              fps if math.isfinite(fps) and fps > 0 else 0.0,
                              count / fps if fps > 0 and count > 0 else 0.0, fourcc, max(count, 0))

    def close(self) -> None:
        self.capture.release()
        if self.owned:
            self.path.unlink(missing_ok=True)

    def frames(self, sampling: Sampling) -> Iterator[SampledFrame]:
        """The sampled frames in order, decoded as they are asked for; the clip is closed when they end (or when
        the caller stops asking). A sampled time past the last frame that decodes is an error in its place."""
        try:
            yield from self._sampled(sampling)
        finally:
            self.close()

    def _sampled(self, sampling: Sampling) -> Iterator[SampledFrame]:
        if sampling.every_n_frames is not None:
            yield from self._every_nth(sampling)
            return
        targets = self._targets(sampling)
        wanted = next(targets, None)
        count = 0
        previous: SampledFrame | None = None  # the last frame read: at or before `wanted`; pixels if it may be shown
        for index, time in self._grabbed():
            while wanted is not None and time > wanted:
                if previous is None:  # the first frame comes after the first time: a player shows it from the start
                    previous = self._retrieved(index, time)
                yield self._shown(previous)
                count += 1
                wanted = next(targets, None) if count < sampling.max_frames else None
            if wanted is None or (sampling.end is not None and time >= sampling.end):
                break
            previous = self._retrieved(index, time) if self._may_be_shown(time, wanted) else SampledFrame(index, time)
        while wanted is not None and count < sampling.max_frames:  # the clip has no more frames
            if previous is not None and wanted < previous.time + self._last_interval - TIME_TOLERANCE:
                yield self._shown(previous)  # the last frame is on screen to the end of the clip
            elif sampling.timestamps is not None or wanted < self.info.duration - TIME_TOLERANCE:
                yield SampledFrame(previous.index + 1 if previous else 0, wanted, error=bad_request(
                    f"{self.source} has no decodable frame at {wanted:.3f} s (the clip ends or is cut short before it)"))
            else:
                return  # every time the clip lasts is sampled
            count += 1
            wanted = next(targets, None)

    def _every_nth(self, sampling: Sampling) -> Iterator[SampledFrame]:
        """Frames 0, n, 2n … of the clip (counted from its first frame) from start to end, at most max_frames."""
        count = 0
        for index, time in self._grabbed():
            if count >= sampling.max_frames or (sampling.end is not None and time >= sampling.end):
                return
            if time >= sampling.start and index % sampling.every_n_frames == 0:
                count += 1
                yield self._retrieved(index, time)

    def _grabbed(self) -> Iterator[tuple[int, float]]:
        """(index, presentation time in s) of each frame, decoded but not yet converted to pixels; keeps the gap
        between the last two frames (how long the last is on screen)."""
        index, before = -1, None
        self._last_interval = self._interval()
        while self.capture.grab():
            index += 1
            time = round(self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000, 6)
            if before is not None and time > before:
                self._last_interval = time - before
            before = time
            yield index, time

    def _interval(self) -> float:
        return 1 / self.info.fps if self.info.fps else 0.5

    def _may_be_shown(self, time: float, wanted: float) -> bool:
        """Whether a frame at `time` may be the last before `wanted` (within two frame intervals of it): only those
        are converted to pixels as they pass; `_shown` decodes another one again."""
        return wanted - time < 2 * self._interval()

    def _shown(self, frame: SampledFrame) -> SampledFrame:
        """The frame with its pixels: a frame a variable frame rate held longer than two intervals is decoded
        again from the start of the clip (rare: it costs a second pass up to it)."""
        if frame.pixels is not None or frame.error is not None:
            return frame
        again = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        try:
            for _ in range(frame.index + 1):
                if not again.grab():
                    return replace(frame, error=bad_request(f"{self.source}: frame {frame.index} could not be decoded"))
            ok, bgr = again.retrieve()
        finally:
            again.release()
        if not ok or bgr is None:
            return replace(frame, error=bad_request(f"{self.source}: frame {frame.index} could not be decoded"))
        return replace(frame, pixels=np.ascontiguousarray(bgr[:, :, ::-1]))

    def _retrieved(self, index: int, time: float) -> SampledFrame:
        ok, bgr = self.capture.retrieve()
        if not ok or bgr is None:
            return SampledFrame(index, time, error=bad_request(f"{self.source}: frame {index} could not be decoded"))
        return SampledFrame(index, time, np.ascontiguousarray(bgr[:, :, ::-1]))

    _targets = PyAVVideo._targets  # the same sampled times as the serving decoder
