"""Video clips for tests, made with FFmpeg's command-line tools (Debian's `ffmpeg`, which `make test` installs), in
every container and codec stock footage arrives in, and what `ffprobe` says of each frame."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from request_handling.settings import Settings
from request_handling.video import SampledFrame, Sampling, Video

TEST_PATTERN = "testsrc2=size={width}x{height}:rate={rate}:duration={seconds}"


def require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not installed (make test installs Debian's ffmpeg)")


def encode(out: Path, *, width: int = 640, height: int = 360, rate: str = "30000/1001", seconds: float = 5,
           codec: str = "libx264", options: tuple[str, ...] = (), filters: str | None = None,
           pix_fmt: str = "yuv420p") -> Path:
    """A test-pattern clip (moving, so that frames differ), with the index at the front of MP4 files; the
    container from the file's suffix (or a `-f` in `options`)."""
    command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi",
               "-i", TEST_PATTERN.format(width=width, height=height, rate=rate, seconds=seconds)]
    if filters:
        command += ["-vf", filters]
    command += ["-c:v", codec, "-pix_fmt", pix_fmt, *options]
    if out.suffix in (".mp4", ".mov"):
        command += ["-movflags", "+faststart"]
    subprocess.run([*command, str(out)], check=True, timeout=600)
    return out


def rotated(source: Path, out: Path) -> Path:
    """The clip with a 90° display matrix in its track header, as a phone held upright writes it."""
    data = bytearray(source.read_bytes())
    box = data.find(b"tkhd")
    version = data[box + 4]
    matrix = box + 8 + (8 if version == 0 else 16) + 8 + (4 if version == 0 else 8) + 16
    data[matrix:matrix + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    out.write_bytes(bytes(data))
    return out


def copied(source: Path, out: Path, *options: str, start: float | None = None) -> Path:
    """The clip's packets copied into `out`'s container (`ffmpeg -c copy`), from `start` s when given (a trim without
    re-encoding, as editors make), with further output options."""
    trim = ("-ss", str(start)) if start is not None else ()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *trim, "-i", str(source), "-c", "copy", *options, str(out)],
                   check=True, timeout=120)
    return out


def with_sound(source: Path, out: Path, seconds: float) -> Path:
    """The clip's frames (copied) with a sound track of `seconds` (a tone, AAC) beside them, as footage carries it."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), "-f", "lavfi", "-i",
                    f"sine=duration={seconds}", "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(out)],
                   check=True, timeout=120)
    return out


def last_frame_held(out: Path, frames: int = 51, rate: int = 25, hold: float = 2.0) -> Path:
    """An MP4 of `frames` at `rate` whose last stays on screen `hold` s (its sample's duration in the index), as a
    screen recording or a variable-frame-rate export may end on a still; made with PyAV's x264, since the ffmpeg
    program gives a last frame one interval."""
    from fractions import Fraction

    import av
    import numpy as np

    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        packets = []
        for n in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), n * 4 % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, rate)
            packets += stream.encode(frame)
        packets += stream.encode()
        for packet in packets:
            if packet.pts * packet.time_base == Fraction(frames - 1, rate):
                packet.duration = int(Fraction(hold) / packet.time_base)
            container.mux(packet)
    return out


def cut_short(source: Path, out: Path, keep: float = 0.5) -> Path:
    """The first `keep` of the file's bytes: the index (at the front) still lists every frame."""
    data = source.read_bytes()
    out.write_bytes(data[:int(len(data) * keep)])
    return out


def probed_frames(path: Path) -> list[tuple[float, bool]]:
    """(presentation time in seconds counted from the first frame, whether a keyframe) of each frame, in
    presentation order, as ffprobe reports it."""
    run = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=best_effort_timestamp_time,key_frame", "-of", "csv=p=0", str(path)],
                         check=True, capture_output=True, text=True, timeout=300)
    frames = []
    for line in run.stdout.splitlines():
        key, _, time = line.strip().strip(",").partition(",")
        if time and time != "N/A":
            frames.append((float(time), key == "1"))
    return [(round(time - frames[0][0], 6), key) for time, key in frames]


def frame_times(path: Path) -> list[float]:
    """Each frame's presentation time in seconds, counted from the first frame, in presentation order."""
    return [time for time, _ in probed_frames(path)]


def frame_count(path: Path) -> int:
    """How many frames ffprobe decodes, those it gives no time too (an MPEG-PS clip's last, for one)."""
    run = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                         check=True, capture_output=True, text=True, timeout=300)
    return int(run.stdout.split()[0].strip(","))  # a transport stream lists its stream again in its program


def keyframe_indices(path: Path) -> list[int]:
    """The presentation-order indices of the keyframes, as ffprobe reports them."""
    return [index for index, (_, key) in enumerate(probed_frames(path)) if key]


def shown_at(times: list[float], wanted: float) -> int:
    """The frame a player shows at `wanted`: the last at or before it (the first before the first frame)."""
    before = [i for i, t in enumerate(times) if t <= wanted + 1e-6]
    return before[-1] if before else 0


def slideshow(out: Path, stills: list[tuple[Path, float]], rate: int = 10) -> Path:
    """A clip showing each still for its seconds in turn (content that changes at known times), nearly lossless."""
    command = ["ffmpeg", "-loglevel", "error", "-y"]
    for still, seconds in stills:
        command += ["-loop", "1", "-framerate", str(rate), "-t", str(seconds), "-i", str(still)]
    joined = "".join(f"[{k}:v]" for k in range(len(stills)))
    command += ["-filter_complex", f"{joined}concat=n={len(stills)}:v=1:a=0,format=yuv420p",
                "-c:v", "libx264", "-crf", "8", "-r", str(rate), str(out)]
    subprocess.run(command, check=True, timeout=600)
    return out


def changing_clip(folder: Path) -> Path:
    """9 s at 10 frames/s: the sample photograph for 3 s, a plain grey frame (nothing to detect) for 3 s, the
    photograph again for 3 s."""
    from PIL import Image

    from helpers import SAMPLE_IMAGE

    grey = folder / "grey.png"
    Image.new("RGB", Image.open(SAMPLE_IMAGE).size, (128, 128, 128)).save(grey)
    return slideshow(folder / "changing.mp4", [(SAMPLE_IMAGE, 3), (grey, 3), (SAMPLE_IMAGE, 3)])


def steady_segments(answer: dict, interval: float) -> dict[str, list[tuple[float, float]]]:
    """The labels an answer (aggregate=both) finds in every frame of the photograph's two stretches, with their
    segments; every segment checked to lie outside the grey stretch (within one sampling interval)."""
    photo = [f for f in answer["frames"] if f["time"] < 3 or f["time"] >= 6]
    steady = set.intersection(*({d["label"] for d in f["detections"]} for f in photo))
    for label in answer["labels"]:
        assert all(s["end"] <= 3 + interval + 1e-6 or s["start"] >= 6 - interval - 1e-6 for s in label["segments"])
    return {label["label"]: [(s["start"], s["end"]) for s in label["segments"]] for label in answer["labels"]
            if label["label"] in steady}


def sampled(media, **options) -> list[SampledFrame]:
    """A clip's sampled frames, the options as a request gives them (`sample_fps=2`, `keyframes=True` …)."""
    sampling = Sampling.of(options.get("sample_fps"), options.get("every_n_frames"), options.get("timestamps"),
                           options.get("start"), options.get("end"), options.get("max_frames"), 1000,
                           options.get("keyframes"))
    return list(Video(media, getattr(media, "name", "clip"), Settings().max_image_pixels).frames(sampling))
