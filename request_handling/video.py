"""Clips: which frames a request samples, and decoding only what they need, with FFmpeg through PyAV.

A sampled frame is the one a player shows at the sampled time: the last frame whose presentation time is at or
before it (the first frame before the first timestamp). Times are counted from the clip's first frame, whatever
the container's start offset (an MPEG transport stream's is often 1.4 s); a frame's index is its place in
presentation order, counted from the packets' timestamps whatever the decode order; frames an edit list cuts, and
those shown before the first frame that decodes (a stream starting inside a GOP), are not the clip's. Frames are
shown as a player shows them: non-square pixels (anamorphic HDV, DVCPRO HD, DV) stretched to the picture's shape and
rotation metadata applied, so width and height are the displayed ones.

Only what the sampling needs is read and decoded:
- where the container indexes every frame (MP4/MOV, MXF, AVI), a sampled time whose keyframe lies ahead of the
  decoder is reached by seeking to that keyframe, so the bytes between are never read: in an all-intra clip
  (ProRes, DNxHD/HR) each sample is one seek and one decode;
- frames no other frame refers to (most B-frames) are not decoded when shown well before the next sampled time,
  in every container whose packets carry their times;
- frames are converted to RGB only when shown, and a frame shown at several sampled times (held on screen by a
  variable frame rate) is decoded and converted once;
- `keyframes` sampling gives the decoder the keyframes alone, each decoded on its own.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from .errors import RequestError, bad_request, too_large
from .results import ClipInfo

if TYPE_CHECKING:
    import av

TIME_TOLERANCE = 1e-4  # s: presentation times are rounded to microseconds; frames are at least 4 ms apart
ROTATIONS = {90: 1, -270: 1, 180: 2, -180: 2, 270: 3, -90: 3}  # display matrix angle → quarter turns (np.rot90's k)
# Frames more than this many frame intervals before the next sampled time cannot be the one shown then, unless the
# clip holds a frame longer (checked for: see Video._at_times); the decoder skips those that are non-reference.
SKIP_MARGIN_FRAMES = 2
# Frames that stop decoding this many frame intervals or less before the video's duration end the clip; further
# before it, the clip is cut short. The slack: an AVI's index may list a frame more than it holds (its sound's delay).
END_SLACK_FRAMES = 2
WHOLE_FILE_DURATION_FORMATS = {"asf"}  # FFmpeg gives each stream of these the file's duration, not its own
MAX_FRAME_RATE = 1000  # frames/s, a high-speed camera's; above it an average rate is not one (raw DV's is 60 000)


@dataclass(frozen=True)
class Sampling:
    """Which frames of a clip to detect in: every 1/sample_fps s, every n-th frame, at given timestamps (s), or the
    keyframes, between start and end (s), at most max_frames."""

    sample_fps: float | None = None
    every_n_frames: int | None = None
    timestamps: tuple[float, ...] | None = None
    start: float = 0.0
    end: float | None = None
    max_frames: int = 1000
    keyframes: bool = False

    @classmethod
    def of(cls, sample_fps: float | None, every_n_frames: int | None, timestamps: tuple[float, ...] | None,
           start: float | None, end: float | None, max_frames: int | None, frame_limit: int,
           keyframes: bool | None = None) -> Sampling:
        """The sampling a request asks for (default: one frame a second), its options checked together: 400
        naming what conflicts; max_frames at most the MAX_VIDEO_FRAMES setting."""
        chosen = [name for name, value in (("sample_fps", sample_fps), ("every_n_frames", every_n_frames),
                                           ("timestamps", timestamps), ("keyframes", keyframes or None))
                  if value is not None]
        if len(chosen) > 1:
            raise bad_request(f"give one of sample_fps, every_n_frames, timestamps and keyframes, not "
                              f"{' and '.join(chosen)}")
        if start is not None and end is not None and end <= start:
            raise bad_request(f"end ({end:g} s) must come after start ({start:g} s)")
        if max_frames is not None and max_frames > frame_limit:
            raise too_large(f"max_frames={max_frames} is over the limit MAX_VIDEO_FRAMES={frame_limit}")
        if not chosen:
            sample_fps = 1.0
        return cls(sample_fps, every_n_frames, tuple(sorted(set(timestamps))) if timestamps else None,
                   start or 0.0, end, max_frames or frame_limit, bool(keyframes))


@dataclass(frozen=True)
class SampledFrame:
    """A frame to detect in: its index in presentation order and its time; RGB pixels, or the error that stands in
    its place (`rest_of_clip`: in place of every frame not yet answered, when the clip could not be read on)."""

    index: int
    time: float
    pixels: np.ndarray | None = None
    error: RequestError | None = None
    rest_of_clip: bool = False


@dataclass(frozen=True)
class FrameIndex:
    """A container's index of every frame, in decode order: each frame's decode time, the keyframes' decode times
    and positions (in the stream's time base), and the positions of the frames an edit list cuts (decoded for the
    frames after them, never shown: a clip trimmed without re-encoding starts inside a GOP)."""

    decode_times: list[int]
    keyframe_times: list[int]
    keyframe_positions: list[int]
    cut: list[int]

    def shown_before(self, position: int) -> int:
        """How many frames before this position of the index are shown (not cut)."""
        return position - bisect.bisect_left(self.cut, position)


@dataclass(frozen=True)
class DecodedFrame:
    """A frame as the decoder gave it, not yet converted to RGB."""

    index: int
    time: float
    frame: av.VideoFrame


def pyav():
    """PyAV, imported at the first clip (the archive carries it in code/lib): a server that is only sent images never
    loads FFmpeg."""
    import av

    return av


def unreadable() -> tuple[type[Exception], ...]:
    """What reading a damaged clip on raises: FFmpeg's errors (PyAV's), and those of the file object it reads."""
    return (pyav().FFmpegError, OSError, ValueError, EOFError)


def ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's own words for a failure where it has them, else the error's type."""
    return getattr(error, "strerror", None) or type(error).__name__


def codec_name(stream: av.video.stream.VideoStream) -> str:
    """The stream's codec as FFmpeg names it (`av1`, not the decoder's `libdav1d`)."""
    context = stream.codec_context
    return context.codec.canonical_name if context is not None else "unknown"


class Video:
    """An opened clip: a file, or a seekable binary file object (bytes in memory, an S3 object read by ranges).

    RequestError 400 when it holds no video FFmpeg can read, 415 when its codec has no decoder here, 413 when its
    frames are over `max_pixels` (the image limit: a frame is converted and letterboxed as an image is).
    """

    def __init__(self, media: Path | str | BinaryIO, source: str, max_pixels: int) -> None:
        self.source = source
        self.max_pixels = max_pixels
        av = pyav()
        try:
            self.container = av.open(str(media) if isinstance(media, Path) else media, metadata_errors="ignore")
        except RequestError:
            raise
        except unreadable() as error:
            raise bad_request(f"{source} is not a video this server can open ({ffmpeg_reason(error)})") from None
        try:
            self._open_stream()
        except BaseException:
            self.container.close()
            raise

    def _open_stream(self) -> None:
        streams = self.container.streams.video
        if not streams:
            raise bad_request(f"{self.source} is not a video this server can open (no video stream)")
        self.stream = stream = streams[0]
        if stream.codec_context is None:
            raise RequestError(415, f"{self.source}: its video codec ({codec_name(stream)}) has no decoder in this "
                                    f"server's FFmpeg ({pyav().ffmpeg_version_info})")
        # the container's sample aspect ratio first, then the codec's, as FFmpeg's players take it
        self._pixel_aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio or Fraction(1)
        self._check_size(self._shown_width(stream.codec_context.width), stream.codec_context.height)  # as it says
        self.time_base = stream.time_base
        # AVI and ASF stamp H.264 in decode order: with B-frames, its frames come out shown in order but stamped out
        # of it; such frames are counted instead, evenly spaced at FFmpeg's guessed rate (an AVI that ffmpeg copies
        # H.264 into from MP4 is timed in half frames: its average rate is twice the frames')
        self._counted = self.container.format.name in ("avi", "asf") and codec_name(stream) == "h264" and \
            bool(stream.codec_context.has_b_frames)
        average = stream.average_rate if stream.average_rate and stream.average_rate <= MAX_FRAME_RATE else None
        rate = (stream.guessed_rate or average) if self._counted else (average or stream.guessed_rate)
        fps = float(rate or 0)
        self._interval = 1 / fps if fps > 0 else 0.5
        self._last_interval = self._interval
        self._keyframes = self._indexed_keyframes()
        # an all-intra clip whose container indexes every frame: each frame is read and decoded alone
        self._intra = self._keyframes is not None and stream.codec_context.codec.intra_only and \
            len(self._keyframes.keyframe_positions) == len(self._keyframes.decode_times)
        # frame threads hold frames back for a few packets; an intra frame read alone decodes at once on slices
        stream.thread_type = "SLICE" if self._intra else "AUTO"
        self._origin: int | None = None  # the first frame's presentation time: the clip's time 0
        self._skip_before: int | None = None  # non-reference frames shown before this time (time base) not decoded
        self._discard = "DEFAULT"
        self._keyframes_alone = False
        self._keyframe_times: set[int] = set()  # the presentation times of the keyframe packets read
        self._never_shown = 0  # packets at the clip's start shown before its first frame, which never decode
        self._restart(anchor=0)
        first = self._peek()
        if first is None:
            raise bad_request(f"{self.source} is not a video this server can open (no decodable frame)")
        self._never_shown = bisect.bisect_left(self._seen, self._origin)
        width, height = self._shown_width(first.frame.width), first.frame.height
        self._check_size(width, height)
        if ROTATIONS.get(round(first.frame.rotation), 0) % 2:
            width, height = height, width
        if stream.duration:
            duration = float(stream.duration * self.time_base)
        else:
            duration = max(0.0, (self.container.duration or 0) / pyav().time_base
                           - float((self._origin - (stream.start_time or self._origin)) * self.time_base))
        frame_count = max(stream.frames, 0) - (len(self._keyframes.cut) if self._keyframes else 0)
        self.info = ClipInfo(width, height, fps, duration, codec_name(stream), frame_count)

    def _indexed_keyframes(self) -> FrameIndex | None:
        """The container's index, where it lists every frame; else None (the clip is read from the start)."""
        entries = self.stream.index_entries
        if not len(entries) or len(entries) != self.stream.frames:
            return None
        decode_times, keyframe_times, keyframe_positions, cut = [], [], [], []
        for position, entry in enumerate(entries):
            decode_times.append(entry.timestamp)
            if entry.is_keyframe:
                keyframe_times.append(entry.timestamp)
                keyframe_positions.append(position)
            if entry.is_discard:
                cut.append(position)
        return FrameIndex(decode_times, keyframe_times, keyframe_positions, cut)

    # -- decoding, in presentation order, from the current position --

    def _restart(self, anchor: int | None) -> None:
        """Decode from here: `anchor` frames precede, in presentation order, the first packet read next (None: as
        many as precede it in the index, found from its decode time)."""
        self._anchor, self._seen, self._read, self._output, self._timed = anchor, [], 0, 0, not self._counted
        self._decoder = self._decoded()
        self._peeked: DecodedFrame | None = None
        self._ended = False

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Every frame the decoder gives from the current position (the keyframes only, each decoded alone, when
        `_keyframes_alone`); the end of what decodes ends it (a clip cut short ends there). An S3 failure while
        reading is raised."""
        held: list[av.VideoFrame] = []  # a keyframe decoded alone, given out once the frames shown before it are read
        try:
            for packet in self.container.demux(self.stream):
                if packet.size:
                    if self._anchor is None:  # the first packet after a seek: a keyframe, in the index
                        self._anchor = bisect.bisect_left(self._keyframes.decode_times, packet.dts)
                    self._read += 1
                    if packet.pts is None:
                        self._timed = False
                    elif not packet.is_discard:  # a frame an edit list cuts is decoded, never shown
                        bisect.insort(self._seen, packet.pts)
                        if packet.is_keyframe:
                            self._keyframe_times.add(packet.pts)
                    if self._skip_before is not None:
                        self._discard_if_early(packet.pts)
                if not self._keyframes_alone:
                    yield from packet.decode()
                elif packet.is_keyframe or not packet.size:  # an open GOP's leading frames follow its keyframe
                    yield from held
                    held = self._decoded_alone(packet) if packet.size else []
        except RequestError:
            raise
        except unreadable():
            pass
        yield from held

    def _decoded_alone(self, packet: av.Packet) -> list[av.VideoFrame]:
        """A keyframe's frames, decoded with no frame before or after it: the decoder drained of what it was given
        before (the frames sent before keyframes were sampled come out), then of the keyframe, and emptied."""
        context = self.stream.codec_context
        frames = [*context.decode(None)]
        context.flush_buffers()
        frames += [*packet.decode(), *context.decode(None)]
        context.flush_buffers()
        return frames

    def _decoded_frame(self, frame: av.VideoFrame) -> DecodedFrame:
        """The frame with its index and time; the next to be taken (`_output` frames were taken before it)."""
        pts = None if self._counted else (frame.pts if frame.pts is not None else frame.dts)
        if self._origin is None:
            self._origin = pts or 0
        if pts is None:  # no time at all: one interval after the frame before
            pts = self._origin + round(self._interval / self.time_base) * (self._shown_anchor() + self._output)
        # frames shown before the clip's first frame never decode (an open GOP's leading frames where the clip starts
        # inside one, as a capture cut mid-stream does): they are not the clip's
        shown_before = bisect.bisect_left(self._seen, pts) - bisect.bisect_left(self._seen, self._origin)
        index = self._shown_anchor() + (shown_before if self._timed else self._output)
        return DecodedFrame(index, round(float((pts - self._origin) * self.time_base), 6), frame)

    def _shown_anchor(self) -> int:
        """How many shown frames precede the first packet read since the restart (those the index lists before it,
        less the frames an edit list cuts and those at the clip's start that never decode)."""
        if self._keyframes is None or self._anchor == 0:
            return self._anchor
        return self._keyframes.shown_before(self._anchor) - self._never_shown

    def _peek(self) -> DecodedFrame | None:
        """The next frame the decoder gives, not yet taken; None at the end of the clip."""
        if self._peeked is None and not self._ended:
            frame = next(self._decoder, None)
            if frame is None:
                self._ended = True
            else:
                self._peeked = self._decoded_frame(frame)
        return self._peeked

    def _take(self) -> DecodedFrame:
        frame = self._peek()
        self._peeked = None
        self._output += 1
        return frame

    def _seek_ahead(self, wanted: float) -> bool:
        """Seek to the last keyframe at or before `wanted` (s) when it lies ahead of what has been read, so that the
        frames between are neither read nor decoded; whether it did."""
        index = self._keyframes
        if index is None or not self._timed:
            return False
        goal = self._origin + math.floor(wanted / self.time_base)
        k = bisect.bisect_right(index.keyframe_times, goal) - 1
        if k <= 0 or index.keyframe_positions[k] <= self._anchor + self._read:
            return False
        self._seek_back_to(wanted)
        return True

    def _seek_back_to(self, wanted: float) -> None:
        """Decode from the last keyframe shown at or before `wanted` (s)."""
        goal = self._origin + math.floor(wanted / self.time_base)
        for _ in range(2):  # a keyframe shown after `wanted` (B-frames delay it): the one before it
            self._seek(goal)
            self._restart(anchor=None)
            first = self._peek()
            if first is None or first.time <= wanted + TIME_TOLERANCE:
                break
            # the index lists decode times: the keyframe sought to decodes at or before the goal, shown after it
            keyframe_times = self._keyframes.keyframe_times
            goal = keyframe_times[max(0, bisect.bisect_right(keyframe_times, goal) - 1)] - 1

    def _rewind(self) -> None:
        """Decode from the clip's first frame again (a container without an index of every frame)."""
        self._seek(0, in_stream=False)  # before the first packet: the container's start
        self._restart(anchor=0)
        first = self._peek()
        if first is None or first.frame.pts != self._origin:
            raise bad_request(f"{self.source}: its start could not be found again (the clip is damaged)")

    def _discard_if_early(self, pts: int | None) -> None:
        """Before a packet goes to the decoder: skip it if it is a non-reference frame shown well before the next
        sampled time (the decoder's threads take the setting with the packet); None: decode whatever comes."""
        early = pts is not None and self._skip_before is not None and self._timed and pts < self._skip_before
        discard = "NONREF" if early else "DEFAULT"
        if discard != self._discard:
            self.stream.codec_context.skip_frame = self._discard = discard

    def _skipped_since(self, taken: DecodedFrame | None, wanted: float) -> float | None:
        """The time of the last frame shown at or before `wanted` (s), when the decoder skipped it and gave `taken`
        (an earlier frame, or None) instead; None when `taken` is that frame."""
        if not self._timed or self._origin is None:
            return None
        goal = self._origin + math.floor((wanted + TIME_TOLERANCE) / self.time_base)
        last_seen = bisect.bisect_right(self._seen, goal) - 1
        if last_seen < 0 or (taken is not None and self._seen[last_seen] <= taken.frame.pts):
            return None
        return float((self._seen[last_seen] - self._origin) * self.time_base)

    def _seek(self, timestamp: int, in_stream: bool = True) -> None:
        """To the last keyframe at or before this time (the stream's time base; FFmpeg's when not `in_stream`), the
        decoder emptied. 400 when the container cannot seek there (a damaged index)."""
        try:
            self.container.seek(timestamp, backward=True, any_frame=False, stream=self.stream if in_stream else None)
        except unreadable() as error:
            message = f"{self.source}: could not seek in it ({ffmpeg_reason(error)}; the clip is damaged)"
            raise bad_request(message) from None
        self.stream.codec_context.flush_buffers()

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise too_large(f"{self.source}: its frames are {width}x{height} = {width * height} pixels; the limit is "
                            f"MAX_IMAGE_PIXELS={self.max_pixels}")

    def _shown_width(self, width: int) -> int:
        """A stored frame's width as shown: stretched by the clip's sample aspect ratio (1440 → 1920 for HDV)."""
        return width if self._pixel_aspect == 1 else max(1, round(width * self._pixel_aspect))

    def _rgb(self, decoded: DecodedFrame) -> np.ndarray:
        """The frame's pixels as shown, upright; 413 for a frame over the limit (a clip may change its size
        mid-stream)."""
        frame = decoded.frame
        width = self._shown_width(frame.width)
        self._check_size(width, frame.height)
        if width == frame.width:
            pixels = frame.to_ndarray(format="rgb24")
        else:  # as `ffmpeg -vf format=rgb24,scale=W:H:flags=bicubic`: converted exactly, then stretched
            pixels = frame.reformat(format="rgb24").reformat(width=width, interpolation="BICUBIC").to_ndarray()
        turns = ROTATIONS.get(round(frame.rotation), 0)
        return np.ascontiguousarray(np.rot90(pixels, turns) if turns else pixels)

    # -- sampling --

    def close(self) -> None:
        self.container.close()

    def frames(self, sampling: Sampling) -> Iterator[SampledFrame]:
        """The sampled frames in order, decoded as they are asked for; the clip is closed when they end (or when
        the caller stops asking). A timestamp asked for past the last frame that decodes is an error in its place;
        a clip that stops decoding before its sampling ends (cut short), or that cannot be read on (S3), answers one
        error standing for the rest."""
        last = SampledFrame(0, 0.0)
        try:
            for last in self._sampled(sampling):
                yield last
        except RequestError as error:
            yield SampledFrame(last.index, last.time, error=error, rest_of_clip=True)
        finally:
            self.close()

    def _sampled(self, sampling: Sampling) -> Iterator[SampledFrame]:
        if self._intra and not sampling.keyframes and sampling.every_n_frames != 1:
            yield from self._intra_frames(sampling)
        elif sampling.every_n_frames is not None or sampling.keyframes:
            yield from self._in_order(sampling)
        else:
            yield from self._at_times(sampling)

    def _intra_frames(self, sampling: Sampling) -> Iterator[SampledFrame]:
        """An all-intra clip's sampled frames, each found in the index, read with one seek and decoded alone."""
        cut = set(self._keyframes.cut)
        positions = [p for p in range(len(self._keyframes.decode_times)) if p not in cut]  # the frames shown
        times = [round(float((self._keyframes.decode_times[p] - self._origin) * self.time_base), 6) for p in positions]
        if sampling.every_n_frames is not None:
            wanted = (times[p] for p in range(0, len(times), sampling.every_n_frames)
                      if times[p] >= sampling.start - TIME_TOLERANCE and (
                          sampling.end is None or times[p] < sampling.end - TIME_TOLERANCE))
        else:
            wanted = self._targets(sampling)
        shown: SampledFrame | None = None
        for count, t in enumerate(wanted):
            if count >= sampling.max_frames:
                return
            position = max(0, bisect.bisect_right(times, t + TIME_TOLERANCE) - 1)
            if position == len(times) - 1 and t >= (end := self._shown_until(position, times[-1])) - TIME_TOLERANCE:
                if sampling.timestamps is None:
                    return  # every time the clip lasts is sampled
                yield SampledFrame(position + 1, t, error=bad_request(
                    f"{self.source} has no frame at {t:.3f} s (the clip ends at {end:.3f} s)"))
                continue
            if shown is None or shown.index != position:
                frame = self._intra_frame(position, positions[position], times[position])
                if frame is None and sampling.timestamps is None:  # the file ends before it: one error for the rest
                    raise self._cut_short(t)
                if frame is None:
                    yield SampledFrame(position, t, error=self._cut_short(t, at_time=True))
                    continue
                shown = frame
            yield shown

    def _intra_frame(self, index: int, position: int, time: float) -> SampledFrame | None:
        """Frame `index` of an all-intra clip, at `position` in the container's index: a seek to it, its packet read
        and decoded; None when the file ends before its packet (a clip cut short: the later frames' packets are
        missing too)."""
        self._seek(self._keyframes.decode_times[position])
        try:
            for packet in self.container.demux(self.stream):
                for frame in packet.decode():
                    return SampledFrame(index, time, self._rgb(DecodedFrame(index, time, frame)))
                if not packet.size:
                    return None
        except RequestError:
            raise
        except unreadable():
            pass
        return SampledFrame(index, time, error=bad_request(
            f"{self.source}: frame {index} could not be decoded (the clip is cut short or damaged)"))

    def _own_duration(self) -> bool:
        """Whether the container gives the video stream's own duration (MP4/MOV, MXF, AVI, MPEG-TS/PS, Ogg), not only
        the file's (Matroska/WebM, FLV, ASF), which a sound track may outlast the picture by."""
        return bool(self.stream.duration) and self.container.format.name not in WHOLE_FILE_DURATION_FORMATS

    def _shown_until(self, index: int, time: float) -> float:
        """When a frame that no decoded frame follows leaves the screen (s): one frame interval after it, or at the
        video's own duration where it is the last frame the container lists (a last frame held on screen)."""
        end = time + self._last_interval
        if self.info.frame_count == index + 1 and self._own_duration():
            return max(end, self.info.duration)
        return end

    def _cut_short_at(self, end: float) -> bool:
        """Whether frames that stop decoding at `end` (s) are a clip cut short: the video's own duration runs on
        past `end` by more than END_SLACK_FRAMES. Where the container gives only the file's, the last frame that
        decodes ends the clip."""
        return self._own_duration() and end < self.info.duration - END_SLACK_FRAMES * self._interval

    def _cut_short(self, wanted: float, at_time: bool = False) -> RequestError:
        """The 400 of a sampled time past the last frame that decodes: for that time alone (a timestamp asked for),
        or from it on (one error for the rest of a sampling)."""
        when = f"at {wanted:.3f} s" if at_time else f"from {wanted:.3f} s on"
        return bad_request(f"{self.source} has no decodable frame {when} (the clip ends or is cut short before it; "
                           f"its container says it lasts {self.info.duration:.3f} s)")

    def _in_order(self, sampling: Sampling) -> Iterator[SampledFrame]:
        """Frames 0, n, 2n … of the clip (counted from its first frame), or its keyframes, from start to end, at
        most max_frames."""
        # keyframes are the frames of the packets the container (or FFmpeg's parser) flags as such (some decoders flag
        # none: QuickTime Animation's), each decoded alone: given only keyframes in a row, FFmpeg's H.264 decoder
        # orders an open GOP's I-frames wrong and loses one. Frames decoded before still come out, and are told apart
        # by their times. A clip whose frames are counted has every frame decoded, so that each keyframe keeps its
        # place; there the decoder's flag tells them.
        self._keyframes_alone = sampling.keyframes and not self._counted
        if sampling.start > 0:
            self._seek_ahead(sampling.start)
        count = 0
        while count < sampling.max_frames and (frame := self._peek()) is not None:
            self._take()
            if sampling.end is not None and frame.time >= sampling.end - TIME_TOLERANCE:
                return
            if sampling.keyframes and self._keyframes_alone and frame.frame.pts is not None:
                wanted = frame.frame.pts in self._keyframe_times
            elif sampling.keyframes:
                wanted = frame.frame.key_frame
            else:
                wanted = frame.index % sampling.every_n_frames == 0
            if wanted and frame.time >= sampling.start - TIME_TOLERANCE:
                count += 1
                yield SampledFrame(frame.index, frame.time, self._rgb(frame))
        if count < sampling.max_frames and self._timed:  # nothing decodes past here: the clip's end, or cut short
            reached = sampling.start
            if self._seen:  # the last packet read, shown or not
                last = float((self._seen[-1] - self._origin) * self.time_base)
                shown = len(self._seen) - bisect.bisect_left(self._seen, self._origin)
                reached = self._shown_until(self._shown_anchor() + shown - 1, last)
            if self._cut_short_at(reached):
                raise self._cut_short(reached)

    def _at_times(self, sampling: Sampling) -> Iterator[SampledFrame]:
        count = 0
        shown: SampledFrame | None = None  # the frame last shown, converted: a held frame is converted once
        previous: DecodedFrame | None = None  # the last frame taken: at or before the sampled time
        # non-reference frames are skipped where the packets have times to tell which are early; should a skipped one
        # turn out to be shown (a held frame), its stretch is decoded again: from its keyframe where the container
        # indexes them, else from the start of the clip, every frame from then on
        skipping = self._timed
        for wanted in self._targets(sampling):
            if count >= sampling.max_frames:
                return
            if self._seek_ahead(wanted):
                previous = None
            if skipping:
                early = wanted - SKIP_MARGIN_FRAMES * self._interval
                self._skip_before = self._origin + math.floor(early / self.time_base)
            previous, following = self._take_until(wanted, previous)
            if skipping and (skipped := self._skipped_since(previous, wanted)) is not None:
                self._skip_before = None  # decoded again, every frame this time
                self._discard_if_early(None)
                if self._keyframes is not None:
                    self._seek_back_to(skipped)
                else:
                    self._rewind()
                    skipping = False
                previous, following = self._take_until(wanted, None)
            if previous is None and following is not None:  # before the first frame: a player shows it from the start
                candidate = following
            elif previous is not None and (following is not None or
                                           wanted < self._shown_until(previous.index, previous.time) - TIME_TOLERANCE):
                candidate = previous  # the last frame stays on screen to the end of the clip
            elif sampling.timestamps is None:  # nothing decodes past here: the clip's end, or one error for the rest
                if wanted < self.info.duration - TIME_TOLERANCE and self._cut_short_at(
                        self._shown_until(previous.index, previous.time) if previous is not None else 0.0):
                    raise self._cut_short(wanted)
                return  # every time the clip lasts is sampled
            else:
                index = previous.index + 1 if previous is not None else 0
                yield SampledFrame(index, wanted, error=self._cut_short(wanted, at_time=True))
                count += 1
                continue
            if shown is None or shown.index != candidate.index:
                shown = SampledFrame(candidate.index, candidate.time, self._rgb(candidate))
            yield shown
            count += 1

    def _take_until(self, wanted: float, previous: DecodedFrame | None) -> tuple[DecodedFrame | None,
                                                                                DecodedFrame | None]:
        """Every frame up to `wanted` (s) taken: (the last of them, or `previous` when none; the next, not taken).
        The clip's frame interval is learnt from frames that follow each other (none skipped between)."""
        while (following := self._peek()) is not None and following.time <= wanted + TIME_TOLERANCE:
            if previous is not None and following.time > previous.time and self._adjacent(previous, following):
                self._last_interval = following.time - previous.time
            previous = self._take()
        return previous, following

    def _adjacent(self, first: DecodedFrame, second: DecodedFrame) -> bool:
        """Whether no frame the container holds is shown between these two (none was skipped)."""
        if not self._timed:
            return True
        return bisect.bisect_right(self._seen, first.frame.pts) == bisect.bisect_left(self._seen, second.frame.pts)

    def _targets(self, sampling: Sampling) -> Iterator[float]:
        """The sampled times in order: the timestamps asked for, or every 1/sample_fps s from start to end (to the
        clip's last frame when no end is given)."""
        if sampling.timestamps is not None:
            yield from (t for t in sampling.timestamps if t >= sampling.start and (sampling.end is None or
                                                                                  t < sampling.end))
            return
        end = math.inf if sampling.end is None else sampling.end
        k = 0
        while (t := sampling.start + k / sampling.sample_fps) < end:
            yield t
            k += 1
