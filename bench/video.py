"""(f) clips through the service as one served worker runs them by default, one row per kind of clip stock footage
arrives as: frames/s, seconds, the bytes read (of an S3 object), and the request's peak memory (Python's allocations,
which hold the decoded frames, and the process's resident growth, which holds FFmpeg's), from a run of its own. The
two 1080p H.264 clips (x264's own choice of frame types, which on grain is nearly all P-frames, and a camera's fixed
IBBP GOP) are also run through today's OpenCV decoder, interleaved with PyAV's, with the cores' limit beside each:
decode and detection CPU time added and spread over the cores."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import psutil
import torch

import request_handling.media
from efficientdet import Detector, EfficientDet
from request_handling.bodies import EntryRequest
from request_handling.placement import warm_up_batch_sizes
from request_handling.service import DetectionService
from request_handling.settings import Settings, load_settings
from request_handling.video import Sampling, Video

from . import environment
from .opencv_video import opened

PATTERN = "testsrc2=size={size}:rate={rate}:duration={seconds}"
NOISE = "nullsrc=s={size}:r={rate}:d={seconds},geq=random(1)*255:128:128"  # grain: an encoder's bits go to detail


def encoded(out: Path, size: str, rate: int, seconds: int, codec: tuple[str, ...], grain: bool = True) -> Path:
    """A moving test pattern (with grain, so that it costs a camera's bits) encoded by ffmpeg."""
    inputs = ["-f", "lavfi", "-i", PATTERN.format(size=size, rate=rate, seconds=seconds)]
    if grain:
        inputs += ["-f", "lavfi", "-i", NOISE.format(size=size, rate=rate, seconds=seconds), "-filter_complex",
                   "[0][1]blend=all_mode=overlay:all_opacity=0.25"]
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *inputs, *codec, str(out)], check=True, timeout=1800)
    return out


def encoded_by_pyav(out: Path, size: tuple[int, int], rate: int, seconds: int, bit_rate: int = 10_000_000) -> Path:
    """A moving test pattern with temporal grain, encoded by PyAV's x264 (`veryfast`, its own choice of frame types)
    into MP4: for a machine without the ffmpeg program (a GPU machine's bare image)."""
    import av

    width, height = size
    graph = av.filter.Graph()
    steps = [graph.add("testsrc2", f"size={width}x{height}:rate={rate}:duration={seconds}"),
             graph.add("noise", "alls=40:allf=t"), graph.add("format", "yuv420p"), graph.add("buffersink")]
    for first, second in zip(steps, steps[1:]):
        first.link_to(second)
    graph.configure()
    with av.open(str(out), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", bit_rate
        stream.options = {"preset": "veryfast", "maxrate": str(bit_rate), "bufsize": str(2 * bit_rate)}
        while True:
            try:
                frame = steps[-1].pull()
            except (av.error.EOFError, av.error.BlockingIOError):
                break
            frame.pts = None
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out


H264_10MBPS = ("-c:v", "libx264", "-preset", "veryfast", "-b:v", "10M", "-maxrate", "10M", "-bufsize", "20M",
               "-pix_fmt", "yuv420p", "-movflags", "+faststart")
PRORES_HQ = ("-c:v", "prores_ks", "-profile:v", "3", "-pix_fmt", "yuv422p10le")
# A camera's long GOP (AVCHD, XAVC S, broadcast MPEG-2 write IBBP, M=3, N=15): two B-frames between references,
# none of them referenced, a keyframe every half second at 30 frames/s.
H264_CAMERA_GOP = (*H264_10MBPS[:-2], "-x264-params", "bframes=2:b-adapt=0:b-pyramid=none:keyint=15:min-keyint=15:"
                   "scenecut=0", "-movflags", "+faststart")
H264_720P = ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p", "-movflags", "+faststart")


class PeakMemory:
    """Python's peak allocation (tracemalloc) and the process's resident growth (sampled) while inside."""

    def __enter__(self) -> PeakMemory:
        self.process = psutil.Process()
        self.base = self.rss_peak = self.process.memory_info().rss
        self.running = True
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        tracemalloc.start()
        self.sampler.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.rss_peak = max(self.rss_peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self.allocated = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        self.running = False
        self.sampler.join()
        self.resident_growth = self.rss_peak - self.base


def timed_request(service: DetectionService, request: EntryRequest, memory: bool = False) -> dict:
    """One request through the service: seconds, frames, stage timings, and (with `memory`) its peak memory."""
    tracker = PeakMemory() if memory else None
    start = time.perf_counter()
    if tracker:
        with tracker:
            prediction = service.predict([request], several=False)
    else:
        prediction = service.predict([request], several=False)
    elapsed = time.perf_counter() - start
    [clip] = prediction.results
    frames = len(getattr(clip, "frames", []))
    row = {"seconds": elapsed, "frames": frames, "frames_per_s": frames / elapsed if elapsed else 0.0,
           "error": getattr(clip, "error", None) is not None or not hasattr(clip, "frames"),
           "stages_s": dict(prediction.timings)}
    if tracker:
        size = clip.info.width * clip.info.height * 3
        row |= {"peak_allocated_mb": tracker.allocated / 1e6, "peak_in_frames": tracker.allocated / size,
                "resident_growth_mb": tracker.resident_growth / 1e6}
    return row


def measured_request(service: DetectionService, request: EntryRequest) -> dict:
    """`timed_request` twice: its peak memory from a traced run, its time and stages from an untraced one (tracing
    Python's allocations slows the request down)."""
    return timed_request(service, request, memory=True) | timed_request(service, request)


def decode_only(media: Callable[[], object], sampling: Sampling, decoder=Video) -> tuple[float, float, list]:
    """(seconds, CPU seconds of the process) to decode the sampled frames alone, and their pixels."""
    start, cpu = time.perf_counter(), time.process_time()
    pixels = [frame.pixels for frame in decoder(media(), "clip", Settings().max_image_pixels).frames(sampling)]
    return time.perf_counter() - start, time.process_time() - cpu, pixels


def detect_only(detector: Detector, pixels: list) -> tuple[float, float]:
    """(seconds, CPU seconds of the process) to detect in these frames one by one, nothing else running."""
    detector.detect(pixels[:1], 0.2, 0.2, 100)
    start, cpu = time.perf_counter(), time.process_time()
    for frame in pixels:
        detector.detect([frame], 0.2, 0.2, 100)
    return time.perf_counter() - start, time.process_time() - cpu


def served_settings() -> Settings:
    """What one served worker on this machine runs with (its torch threads, the forward passes a request runs at
    once, the batch size): `load_settings` of a model dir with no efficientdet.json, with a deadline and a frame
    limit that (f)'s clips do not reach."""
    with tempfile.TemporaryDirectory() as model_dir:
        return replace(load_settings(model_dir), request_timeout=3600, max_video_frames=10_000)


def bench_video(model: EfficientDet, seconds: int, rounds: int, master: bool = True) -> dict | None:
    """Every clip kind of (f) as a served worker runs it by default; None where ffmpeg is missing. `rounds` of the
    H.264 comparison, interleaved."""
    if shutil.which("ffmpeg") is None:
        return None
    settings = served_settings()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.num_threads)
    try:
        # built and warmed up under the worker's thread count, as DetectionService.load does: the oneDNN Graph's
        # kernels are chosen for the threads they are compiled with
        detector = Detector(model)
        detector.warm_up(warm_up_batch_sizes(settings.batch_size, "cpu"))
        return {"clip_seconds": seconds, "threads": settings.num_threads, "parallel": settings.parallel_batches,
                "rows": _clip_rows(DetectionService(detector, settings), detector, seconds, rounds, master)}
    finally:
        torch.set_num_threads(threads)


def _clip_rows(service: DetectionService, detector: Detector, seconds: int, rounds: int, master: bool) -> dict:
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        h264 = encoded(folder / "h264.mp4", "1920x1080", 30, seconds, H264_10MBPS)
        rows["1080p H.264 10 Mb/s, sample_fps=1"] = against_opencv(service, detector, h264, rounds)
        data = h264.read_bytes()
        rows["1080p H.264 10 Mb/s, keyframes"] = measured_request(
            service, EntryRequest(inline=data, keyframes=True)) | {"clip_mb": len(data) / 1e6}
        h264.unlink()
        camera = encoded(folder / "camera.mp4", "1920x1080", 30, seconds, H264_CAMERA_GOP)
        rows["1080p H.264 10 Mb/s, camera GOP (IBBP), sample_fps=1"] = against_opencv(service, detector, camera, rounds)
        camera.unlink()
        long = 10 * seconds  # ten minutes by default
        ten_minutes = encoded(folder / "long.mp4", "1280x720", 30, long, H264_720P, grain=False)
        rows[f"{long} s 720p H.264, three timestamps"] = measured_request(service, EntryRequest(
            inline=ten_minutes.read_bytes(), timestamps=(0.1025 * long, 0.5 * long, 0.912 * long))) | {
            "clip_mb": ten_minutes.stat().st_size / 1e6}
        ten_minutes.unlink()
        if master:
            rows["ProRes 422 HQ 1080p25 master from S3, sample_fps=1"] = bench_master(service, folder, seconds)
    return rows


def against_opencv(service: DetectionService, detector: Detector, clip: Path, rounds: int) -> dict:
    """A clip at one frame a second through PyAV and through today's OpenCV decoder, `rounds` interleaved (the
    fastest of each kept), with each path's decode alone, detection alone and the cores' limit."""
    data = clip.read_bytes()
    per_second = EntryRequest(inline=data, sample_fps=1.0)
    pyav, opencv = [], []
    for _ in range(rounds):
        pyav.append(timed_request(service, per_second))
        with patched(request_handling.media, "Video", opened):
            opencv.append(timed_request(service, per_second))
    best = min(pyav, key=lambda row: row["seconds"])
    old = min(opencv, key=lambda row: row["seconds"])
    sampling = Sampling(sample_fps=1.0)
    decode, decode_cpu, pixels = decode_only(lambda: clip, sampling)
    detect, detect_cpu = detect_only(detector, pixels)
    del pixels
    opencv_decode, opencv_decode_cpu, _ = decode_only(lambda: clip, sampling, decoder=opened)
    return timed_request(service, per_second, memory=True) | best | {
        "clip_mb": len(data) / 1e6, "opencv_seconds": old["seconds"],
        "speedup": old["seconds"] / best["seconds"], "decode_alone_s": decode, "decode_cpu_s": decode_cpu,
        "detect_alone_s": detect, "detect_cpu_s": detect_cpu, "cores_limit_s": (decode_cpu + detect_cpu) / os.cpu_count(),
        "opencv_decode_alone_s": opencv_decode, "opencv_decode_cpu_s": opencv_decode_cpu,
        "opencv_cores_limit_s": (opencv_decode_cpu + detect_cpu) / os.cpu_count()}


def bench_master(service: DetectionService, folder: Path, seconds: int) -> dict:
    """An all-intra master read from S3 (SeaweedFS on loopback) by byte ranges: the share of its bytes read."""
    from localrun.s3server import SeaweedS3

    master = encoded(folder / "master.mov", "1920x1080", 25, seconds, PRORES_HQ)
    size = master.stat().st_size
    with SeaweedS3() as s3:
        client = s3.client()
        client.create_bucket(Bucket="bench-videos")
        client.upload_file(str(master), "bench-videos", "master.mov")
        master.unlink()
        fetched = []
        real_fetch = request_handling.media.fetch_media

        def counting_fetch(*args):
            reader = real_fetch(*args)
            fetched.append(reader)
            return reader

        server = psutil.Process(s3.process.pid)
        request = EntryRequest("bench-videos", "master.mov", sample_fps=1.0)
        with environment(**s3.env()), patched(request_handling.media, "fetch_media", counting_fetch):
            row = timed_request(service, request, memory=True)
            fetched.clear()
            server_cpu, cpu = sum(server.cpu_times()[:2]), time.process_time()
            row |= timed_request(service, request)
            server_cpu, cpu = sum(server.cpu_times()[:2]) - server_cpu, time.process_time() - cpu
    read = sum(getattr(reader, "fetched", 0) for reader in fetched)
    return row | {"clip_mb": size / 1e6, "read_mb": read / 1e6, "read_share": read / size, "cpu_s": cpu,
                  "s3_server_cpu_s": server_cpu}


class patched:
    """`owner.name` replaced by `value` while inside."""

    def __init__(self, owner, name: str, value) -> None:
        self.owner, self.name, self.value = owner, name, value

    def __enter__(self) -> None:
        self.saved = getattr(self.owner, self.name)
        setattr(self.owner, self.name, self.value)

    def __exit__(self, *exc) -> None:
        setattr(self.owner, self.name, self.saved)


def video_markdown(result: dict) -> list[str]:
    lines = ["", f"Clips as one served worker runs them by default here: {result['threads']} torch thread(s) a forward "
                 f"pass, {result['parallel']} pass(es) at once.",
             "", f"| clip ({result['clip_seconds']} s unless said) | MB | frames | seconds | frames/s | read from S3 "
                 "| peak allocated (frames) | resident growth |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind, row in result["rows"].items():
        read = f"{row['read_mb']:.0f} MB ({100 * row['read_share']:.1f} %)" if "read_mb" in row else "—"
        lines.append(f"| {kind} | {row['clip_mb']:.0f} | {row['frames']}{' (error)' if row['error'] else ''} | "
                     f"{row['seconds']:.2f} | {row['frames_per_s']:.1f} | {read} | {row['peak_allocated_mb']:.0f} MB "
                     f"({row['peak_in_frames']:.1f}) | {row['resident_growth_mb']:.0f} MB |")
    master = result["rows"].get("ProRes 422 HQ 1080p25 master from S3, sample_fps=1")
    if master:
        lines += ["", f"The ProRes master's request: {master['cpu_s']:.1f} CPU s in this process; the S3 server on "
                      f"loopback, on the same {os.cpu_count()} cores, {master['s3_server_cpu_s']:.1f} CPU s."]
    for kind, row in result["rows"].items():
        if "opencv_seconds" in row:
            lines += ["", f"{kind}, interleaved: PyAV {row['seconds']:.1f} s, today's OpenCV decoder "
                          f"{row['opencv_seconds']:.1f} s ({row['speedup']:.2f}× faster). Alone: decoding the sampled "
                          f"frames PyAV {row['decode_alone_s']:.1f} s ({row['decode_cpu_s']:.1f} CPU s), OpenCV "
                          f"{row['opencv_decode_alone_s']:.1f} s ({row['opencv_decode_cpu_s']:.1f} CPU s); detecting in "
                          f"them {row['detect_alone_s']:.1f} s ({row['detect_cpu_s']:.1f} CPU s). The cores' limit, "
                          f"decode and detection CPU time added and spread over {os.cpu_count()} cores: PyAV "
                          f"{row['cores_limit_s']:.1f} s, OpenCV {row['opencv_cores_limit_s']:.1f} s."]
    return lines
