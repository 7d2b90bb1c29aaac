"""Clips: which frames a request samples, and decoding them with the
FFmpeg that OpenCV's wheels (and both AWS images) bundle.

A sampled frame is the one a player shows at the sampled time: the last frame whose presentation time is at or
before it (the first frame before the first timestamp). Frames are read in presentation order, whatever the
decode order and frame rate; rotation metadata is applied (OpenCV's default), so width and height are the
displayed ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .errors import RequestError, bad_request, too_large
from .results import ClipInfo

TIME_TOLERANCE = 1e-4  # s: presentation times are rounded to microseconds; frames are at least 4 ms apart


@dataclass(frozen=True)
class Sampling:
    """Which frames of a clip to detect in: every 1/sample_fps s, every n-th frame, or at given timestamps (s),
    between start and end (s), at most max_frames."""

    sample_fps: float | None = None
    every_n_frames: int | None = None
    timestamps: tuple[float, ...] | None = None
    start: float = 0.0
    end: float | None = None
    max_frames: int = 1000

    @classmethod
    def of(cls, sample_fps: float | None, every_n_frames: int | None, timestamps: tuple[float, ...] | None,
           start: float | None, end: float | None, max_frames: int | None, frame_limit: int) -> Sampling:
        """The sampling a request asks for (default: one frame a second), its options checked together: 400
        naming what conflicts; max_frames at most the MAX_VIDEO_FRAMES setting."""
        chosen = [name for name, value in (("sample_fps", sample_fps), ("every_n_frames", every_n_frames),
                                           ("timestamps", timestamps)) if value is not None]
        if len(chosen) > 1:
            raise bad_request(f"give one of sample_fps, every_n_frames and timestamps, not {' and '.join(chosen)}")
        if start is not None and end is not None and end <= start:
            raise bad_request(f"end ({end:g} s) must come after start ({start:g} s)")
        if max_frames is not None and max_frames > frame_limit:
            raise too_large(f"max_frames={max_frames} is over the limit MAX_VIDEO_FRAMES={frame_limit}")
        if not chosen:
            sample_fps = 1.0
        return cls(sample_fps, every_n_frames, tuple(sorted(set(timestamps))) if timestamps else None,
                   start or 0.0, end, max_frames or frame_limit)


@dataclass(frozen=True)
class SampledFrame:
    """A frame to detect in: its index in presentation order and its presentation time; RGB pixels, or the error
    that stands in its place."""

    index: int
    time: float
    pixels: np.ndarray | None = None
    error: RequestError | None = None


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

    def _targets(self, sampling: Sampling) -> Iterator[float]:
        """The sampled times in order (not for every_n_frames, which picks by index): the timestamps asked for, or
        every 1/sample_fps s from start to end (to the clip's last frame when no end is given)."""
        if sampling.timestamps is not None:
            yield from (t for t in sampling.timestamps if t >= sampling.start and (sampling.end is None or
                                                                                  t < sampling.end))
            return
        end = math.inf if sampling.end is None else sampling.end
        k = 0
        while (t := sampling.start + k / sampling.sample_fps) < end:
            yield t
            k += 1
