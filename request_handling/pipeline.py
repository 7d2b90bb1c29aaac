"""The request pipeline as named stages, with one item type, `Frame`, flowing through them:

    entries → expand → load_ahead → batched → BatchRunner.run → gather → outcomes in request order

An entry (one `EntryRequest`) expands into the frames to detect in: an image is one, a video as many as its
sampling picks. Entries are fetched a bounded window ahead on a pool; an image is decoded there, a video's frames
are decoded in order as the pipeline asks for them (so a clip's decode overlaps the detection of its previous
batch, and only a few frames are held at once). Frames are grouped into batches, detected (earlier batches on the
detect pool, the last on the calling thread), and gathered back into their entries. Each stage passes a frame
that already has its outcome (a failure) on untouched. Concurrency and the deadline belong to the stages that
need them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace

from .bodies import EntryRequest
from .errors import RequestError, timed_out
from .images import DecodedImage
from .results import ClipInfo, ClipResult, EntryFailure, FrameResult, ImageResult, Outcome
from .video import Sampling


@dataclass(frozen=True)
class ResolvedRequest:
    """One entry (its place in the request) with the service's defaults filled in and its classes as ids."""

    entry: int
    request: EntryRequest
    pred_threshold: float
    iou_threshold: float
    max_detections: int
    class_ids: frozenset[int] | None
    sampling: Sampling = Sampling()


@dataclass(frozen=True)
class Frame:
    """One picture to detect in, as the stages fill it in: its entry, the resolved request, the decoded image,
    and finally its outcome (set early when it fails). A clip's frame also has `clip` set and its index and time
    in the clip; a failed frame with `rest_of_clip` stands for every frame of the clip not answered before it.
    `last`: no frame follows it in the request."""

    entry: int
    source: str | None
    request: ResolvedRequest | None = None
    image: DecodedImage | None = None
    outcome: ImageResult | EntryFailure | None = None
    clip: ClipInfo | None = None
    frame_index: int | None = None
    time: float | None = None
    rest_of_clip: bool = False
    fetch_seconds: float = 0.0
    decode_seconds: float = 0.0
    last: bool = False

    def failed(self, error: RequestError) -> Frame:
        return replace(self, image=None, outcome=EntryFailure(self.source, error))


@dataclass(frozen=True)
class Batch:
    """Frames that go through the network together; the last batch of a request runs on the calling thread."""

    frames: list[Frame]
    last: bool


def late(frame: Frame, what: str, request_timeout: float) -> RequestError:
    """The 504 of a frame that was not `what` (read and decoded, detected) within the request's budget; a body
    sent inline is named as what it is."""
    inline = "the clip" if frame.clip is not None else "the image"  # every frame of a clip carries its info
    return timed_out(f"{frame.source or inline} was not {what} within REQUEST_TIMEOUT={request_timeout:g} s")


def expand(requests: list[EntryRequest], resolve: Callable[[int, EntryRequest], ResolvedRequest]) -> Iterator[Frame]:
    """Entries → frames: an image entry is one frame; an entry that cannot be served (`resolve` raised) is one
    failed frame."""
    for index, request in enumerate(requests):
        frame = Frame(index, request.source)
        try:
            yield replace(frame, request=resolve(index, request))
        except RequestError as error:
            yield frame.failed(error)


def load_ahead(frames: Iterable[Frame], load: Callable[[Frame], Frame | Iterator[Frame]], pool: Executor,
               window: int, deadline: float, request_timeout: float) -> Iterator[Frame]:
    """Frames → loaded frames, in order, at most `window` entries in flight: `load` runs on `pool` and gives the
    frame fetched and decoded, or (a video) an iterator of its frames, decoded here as they are asked for. A frame
    not loaded by the deadline fails with 504 (one not started yet never starts; a video stops there, one failed
    frame standing for the rest). The request's last frame is marked `last` as it is yielded, without waiting for
    anything after it."""
    source = iter(frames)
    running: deque[tuple[Frame, Future | None]] = deque()
    for frame in source:
        running.append(_started(frame, load, pool))
        if len(running) >= window:
            break
    while running:
        frame, future = running.popleft()
        result: Frame | Iterator[Frame] = frame
        if future is not None:
            try:
                result = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                future.cancel()
                result = frame.failed(late(frame, "read and decoded", request_timeout))
        following = next(source, None)
        if following is not None:
            running.append(_started(following, load, pool))
        if isinstance(result, Frame):
            yield replace(result, last=not running)
        else:
            yield from _marking_the_last(_until(result, deadline, request_timeout), last_entry=not running)


def _marking_the_last(video_frames: Iterator[Frame], last_entry: bool) -> Iterator[Frame]:
    """A video's frames, its final one marked `last` when the video is the request's last entry (a frame ahead is
    decoded to know it)."""
    frame = next(video_frames, None)
    while frame is not None:
        following = next(video_frames, None)
        yield replace(frame, last=last_entry and following is None)
        frame = following


def _until(video_frames: Iterator[Frame], deadline: float, request_timeout: float) -> Iterator[Frame]:
    """A video's frames as long as the deadline allows; then one failed frame for the rest of the clip."""
    for frame in video_frames:
        if time.monotonic() > deadline:
            video_frames.close()
            rest = replace(frame, frame_index=None, time=None, rest_of_clip=True, fetch_seconds=0.0,
                           decode_seconds=0.0)
            yield rest.failed(late(rest, "read to the end of its sampling", request_timeout))
            return
        yield frame


def _started(frame: Frame, load: Callable[[Frame], Frame | Iterator[Frame]], pool: Executor) -> tuple[Frame, Future | None]:
    """The frame with its load submitted to the pool; a frame that already failed needs none."""
    return frame, None if frame.outcome is not None else pool.submit(load, frame)


def batched(frames: Iterable[Frame], size: int) -> Iterator[Frame | Batch]:
    """Loaded frames → batches of up to `size`; failed frames pass through on their own. A batch ends when it is
    full or the request's last frame has come."""
    batch: list[Frame] = []
    for frame in frames:
        if frame.outcome is not None:
            yield frame
        else:
            batch.append(frame)
        if batch and (len(batch) == size or frame.last):
            yield Batch(batch, last=frame.last)
            batch = []


@dataclass
class BatchRunner:
    """Batches → detected frames. `prepare` readies a batch on the collecting thread (the device JPEG decode,
    while the pool still runs the previous batch) and may fail some of its frames; `detect` runs one batch and
    returns its frames with outcomes and its stage timings. Earlier batches run on `pool`, `parallel` at once;
    the last on the calling thread (the one that warmed the model up: its OpenMP threads are ready, so it runs a
    batch faster on CPU than a pool thread does). A batch whose turn comes after the deadline fails with 504."""

    prepare: Callable[[list[Frame]], list[Frame]]
    detect: Callable[[list[Frame]], tuple[list[Frame], dict[str, float]]]
    pool: Executor
    parallel: int
    deadline: float
    request_timeout: float
    batches: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, summed over the batches

    def run(self, items: Iterable[Frame | Batch]) -> Iterator[Frame]:
        running: deque[Future] = deque()
        for item in items:
            if isinstance(item, Frame):
                yield item
                continue
            if time.monotonic() > self.deadline:
                yield from (f.failed(late(f, "detected", self.request_timeout)) for f in item.frames)
                continue
            prepared = self.prepare(item.frames)
            yield from (f for f in prepared if f.outcome is not None)
            ready = [f for f in prepared if f.outcome is None]
            if not ready:
                continue
            self.batches += 1
            if item.last:
                yield from self._collected(self.detect(ready))
                continue
            running.append(self.pool.submit(self.detect, ready))
            while len(running) > self.parallel:
                yield from self._collected(running.popleft().result())
        while running:
            yield from self._collected(running.popleft().result())

    def _collected(self, detected: tuple[list[Frame], dict[str, float]]) -> list[Frame]:
        frames, timings = detected
        for stage, seconds in timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        return frames


def gather(frames: Iterable[Frame], entries: int) -> list[Outcome]:
    """Detected frames → one outcome per entry, in request order: an image's own, or a video's frames in order (a
    video whose frame standing for "the rest" comes before any other fails whole with that frame's error)."""
    outcomes: list[Outcome | None] = [None] * entries
    for frame in frames:
        if frame.clip is None:
            outcomes[frame.entry] = frame.outcome
            continue
        video = outcomes[frame.entry]
        if isinstance(video, EntryFailure):  # a clip already failed whole: nothing more to gather
            continue
        if video is None:
            resolved = frame.request
            asked = resolved.request
            video = outcomes[frame.entry] = ClipResult(frame.source, frame.clip, resolved.pred_threshold,
                                                       resolved.iou_threshold, [], aggregate=asked.aggregate or "frames",
                                                       sort_by=asked.sort_by or "timestamp")
        if frame.rest_of_clip and not video.frames:  # nothing of the clip was read: the entry fails
            outcomes[frame.entry] = frame.outcome
        elif frame.rest_of_clip:
            outcomes[frame.entry] = replace(video, error=frame.outcome.error)
        else:
            video.frames.append(FrameResult(frame.frame_index, frame.time, frame.outcome))
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:
        raise RuntimeError(f"entries {missing} came out of the pipeline without an outcome")
    for video in (o for o in outcomes if isinstance(o, ClipResult)):
        video.frames.sort(key=lambda f: (f.time, f.index))
    return outcomes
