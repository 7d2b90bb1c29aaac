"""(f) a video through the service: a 1080p H.264 clip sampled at one frame a second, frames/s end to end and the
time per stage (decode, which includes reading past the frames not sampled; pre-process, network, NMS), and the
most memory the request allocated, in frames' worth."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

from efficientdet import Detector
from request_handling.bodies import EntryRequest
from request_handling.service import DetectionService
from request_handling.settings import Settings

from . import environment

CLIP = "testsrc2=size=1920x1080:rate=30:duration={seconds}"


def encoded_clip(folder: Path, seconds: int) -> Path:
    """A 1080p H.264 clip at 30 frames/s as an encoder's fast preset writes it (B-frames), made with ffmpeg."""
    out = folder / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", CLIP.format(seconds=seconds),
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-pix_fmt", "yuv420p", str(out)],
                   check=True, timeout=900)
    return out


def bench_video(detector: Detector, seconds: int, rounds: int) -> dict | None:
    """The clip inline at sample_fps=1, `rounds` times (the fastest reported) and once more with tracemalloc
    tracing every allocation for the peak; None where ffmpeg is missing."""
    if shutil.which("ffmpeg") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        data = encoded_clip(Path(folder), seconds).read_bytes()
    service = DetectionService(detector, Settings(batch_size=1, request_timeout=600))
    request = EntryRequest(inline=data, sample_fps=1.0)
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        prediction = service.predict([request], several=False)
        runs.append((time.perf_counter() - start, prediction))
    elapsed, prediction = min(runs, key=lambda run: run[0])
    tracemalloc.start()
    service.predict([request], several=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    [video] = prediction.results
    frame_bytes = video.info.width * video.info.height * 3
    frames = len(video.frames)
    return {"clip": f"{seconds} s 1080p H.264 at 30 frames/s, {len(data) / 1e6:.1f} MB", "frames": frames,
            "seconds": elapsed, "frames_per_s": frames / elapsed,
            "stages_ms_per_frame": {stage: 1000 * s / frames for stage, s in prediction.timings.items()},
            "peak_allocated_mb": peak / 1e6, "peak_in_frames": peak / frame_bytes}


def video_markdown(result: dict) -> list[str]:
    stages = result["stages_ms_per_frame"]
    return ["", "| video, sample_fps=1 | frames | seconds | frames/s | decode ms/frame | pre-process | network | NMS "
                "| peak allocated |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {result['clip']} | {result['frames']} | {result['seconds']:.1f} | {result['frames_per_s']:.2f} | "
            f"{stages.get('decode', 0):.0f} | {stages.get('preprocess', 0):.1f} | {stages.get('network', 0):.0f} | "
            f"{stages.get('nms', 0):.1f} | {result['peak_allocated_mb']:.0f} MB ({result['peak_in_frames']:.1f} "
            "frames) |"]


def bench_large_clip(detector: Detector, gigabytes: float) -> dict | None:
    """(f′) a clip of at least `gigabytes` GB read from S3 (SeaweedFS on loopback) at one frame a second: the most
    memory the request allocated (tracemalloc, every allocation), against one decoded frame's size. The clip is
    uploaded from disk and streamed by the service to a temporary file; None where ffmpeg is missing."""
    if shutil.which("ffmpeg") is None:
        return None
    from localrun.s3server import SeaweedS3

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "large.mp4"
        seconds = max(60, round(280 * gigabytes))  # about 0.22 GB a minute of this pattern at 1080p, quantiser 8
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", CLIP.format(seconds=seconds),
                        "-c:v", "libx264", "-preset", "ultrafast", "-qp", "8", "-pix_fmt", "yuv420p",
                        "-movflags", "+faststart", str(clip)], check=True, timeout=1800)
        size = clip.stat().st_size
        with SeaweedS3() as s3:
            client = s3.client()
            client.create_bucket(Bucket="bench-videos")
            client.upload_file(str(clip), "bench-videos", "large.mp4")
            clip.unlink()
            with environment(**s3.env()):
                service = DetectionService(detector, Settings(batch_size=1, request_timeout=3600,
                                                              max_video_frames=10_000))
                tracemalloc.start()
                start = time.perf_counter()
                prediction = service.predict([EntryRequest("bench-videos", "large.mp4", sample_fps=1.0)], several=False)
                elapsed = time.perf_counter() - start
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
    [video] = prediction.results
    frame_bytes = video.info.width * video.info.height * 3
    return {"clip_gb": size / 1e9, "frames": len(video.frames), "seconds": elapsed, "error": video.error is not None,
            "peak_allocated_mb": peak / 1e6, "peak_in_frames": peak / frame_bytes}


def large_clip_markdown(result: dict) -> list[str]:
    return ["", f"A {result['clip_gb']:.2f} GB 1080p clip from S3 at sample_fps=1: {result['frames']} frames in "
                f"{result['seconds']:.0f} s; the request allocated at most {result['peak_allocated_mb']:.0f} MB "
                f"({result['peak_in_frames']:.1f} decoded frames' worth)."]
