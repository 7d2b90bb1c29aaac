"""What a request's entries came to, with no model attached: what `responses` and `formats` turn into a body.

An entry is one image or one clip of a request. Each ends as an `ImageResult` (an image's detections), a
`ClipResult` (a clip's sampled frames, each an `ImageResult` or an `EntryFailure`) or an `EntryFailure` (why the
entry has no detections). A `Prediction` holds them in request order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import RequestError

if TYPE_CHECKING:  # the results carry the detector's detections; reading them needs no torch
    from efficientdet import Detection


@dataclass(frozen=True)
class ImageResult:
    """The detections in one image (or one frame of a clip); width and height are the full image's."""

    source: str | None
    width: int
    height: int
    pred_threshold: float
    iou_threshold: float
    detections: list[Detection]


@dataclass(frozen=True)
class EntryFailure:
    """Why an entry (an image, a clip, or one frame of a clip) has no detections."""

    source: str | None
    error: RequestError


@dataclass(frozen=True)
class ClipInfo:
    """What the container says of a clip: displayed size, average frame rate, duration (s), codec, frames."""

    width: int
    height: int
    fps: float
    duration: float
    codec: str
    frame_count: int


@dataclass(frozen=True)
class FrameResult:
    """One sampled frame of a clip: its index in presentation order, its time (s), its detections or its error."""

    index: int
    time: float
    outcome: ImageResult | EntryFailure


@dataclass(frozen=True)
class ClipResult:
    """The sampled frames of one clip, in order; `error` when the clip could not be read to the end of its
    sampling (cut short by the deadline)."""

    source: str | None
    info: ClipInfo
    pred_threshold: float
    iou_threshold: float
    frames: list[FrameResult]
    error: RequestError | None = None
    aggregate: str = "frames"  # the answer holds its frames, its labels' segments, or both
    sort_by: str = "timestamp"  # Rekognition's SortBy for its labels


Outcome = ImageResult | EntryFailure | ClipResult


@dataclass
class Prediction:
    """Every entry's outcome in request order, and what the request's log line reports. `several`: the body listed
    several entries, so the answer is a list (or JSON Lines) even when only one is left."""

    results: list[Outcome]
    several: bool
    model: str
    untrained: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    batches: int = 0

    def request_error(self) -> RequestError | None:
        """The error the whole request answers with: a single entry's, or the first entry's when no entry of
        several could be detected; None when the request answers 200."""
        if all(isinstance(r, EntryFailure) for r in self.results):
            return self.results[0].error
        return None
