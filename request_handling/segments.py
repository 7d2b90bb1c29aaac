"""What a clip is about: each label's segments (the stretches of sampled frames in which it is detected) and a
summary per label, from the clip's per-frame results. No torch: `formats` turns them into each answer's shape.

A segment is a run of sampled frames in which the label is detected; a label missing from at most `max_gap`
sampled frames between two that have it (below the threshold, or a frame that failed) stays one segment. A
segment starts at its first frame's time and ends when its last frame leaves the screen at the sampling rate: at
the next sampled frame's time, or for the clip's last sampled frame one sampling interval later (the clip's end at
most).
"""

from __future__ import annotations

from dataclasses import dataclass

from .results import ClipResult, ImageResult

MAX_GAP_FRAMES = 1


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    max_score: float
    frames: int  # sampled frames in which the label is detected


@dataclass(frozen=True)
class LabelSummary:
    """A label over the whole clip: where it first and last is, in how many sampled frames, how sure, and when."""

    label: str
    class_id: int
    first: float
    last: float
    frames: int
    max_score: float
    mean_score: float  # of its best score in each frame that has it
    segments: list[Segment]

    @property
    def on_screen(self) -> float:
        return sum(segment.end - segment.start for segment in self.segments)


def frame_ends(times: list[float], duration: float) -> list[float]:
    """When each sampled frame leaves the screen at the sampling rate: the next one's time; the last one's, one
    interval later (the last interval between sampled frames, or to the clip's end), the clip's end at most."""
    if not times:
        return []
    ends = times[1:]
    last_interval = times[-1] - times[-2] if len(times) > 1 else max(0.0, duration - times[-1])
    ends.append(max(times[-1], min(duration, times[-1] + last_interval)) if duration > 0 else times[-1] + last_interval)
    return ends


def summarise(clip: ClipResult, max_gap: int = MAX_GAP_FRAMES) -> list[LabelSummary]:
    """Every label detected in the clip with its segments, the longest on screen first."""
    frames = sorted(clip.frames, key=lambda f: (f.time, f.index))
    times = [f.time for f in frames]
    ends = frame_ends(times, clip.info.duration)
    seen: dict[tuple[str, int], dict[int, float]] = {}  # label → {position: best score there}
    for position, frame in enumerate(frames):
        if isinstance(frame.outcome, ImageResult):
            for d in frame.outcome.detections:
                scores = seen.setdefault((d.label or f"class {d.class_id}", d.class_id), {})
                scores[position] = max(scores.get(position, 0.0), d.score)
    summaries = []
    for (label, class_id), scores in seen.items():
        positions = sorted(scores)
        runs: list[list[int]] = [[positions[0]]]
        for position in positions[1:]:
            if position - runs[-1][-1] - 1 <= max_gap:
                runs[-1].append(position)
            else:
                runs.append([position])
        segments = [Segment(times[run[0]], ends[run[-1]], max(scores[p] for p in run), len(run)) for run in runs]
        summaries.append(LabelSummary(label, class_id, segments[0].start, segments[-1].end, len(positions),
                                      max(scores.values()), sum(scores.values()) / len(scores), segments))
    return sorted(summaries, key=lambda s: (-s.on_screen, -s.max_score, s.label))
