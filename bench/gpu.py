"""`python -m bench.gpu`: the GPU path stage by stage, on a bare GPU machine.

Needs torch, torchvision, numpy, Pillow and OpenCV, plus the sagemaker-inference package for the handler's
four functions (a pure-Python wheel) — no Java, TorchServe or S3. Per model configuration (coefficient ×
float16/float32 × CUDA graphs on/off) it times:
(a) cold start (model_fn: load, warm-up, graph capture) and the realtime path, a 1080p JPEG body → JSON
    through model_fn and transform_fn, p50/p95;
(b) 1080p JPEG bytes → detections per batch size: decode (batched, on the device), letterbox, network,
    post-processing, each stage timed to its end on the device, and images/s end to end;
(c) peak GPU memory;
and once, for the first coefficient: the device decoder against the CPU one (Pillow's libjpeg-turbo, what the
reference and the CPU path use): time per frame, and the share of CPU-decode detections found again in the device
decode's; (d) float16's detections against float32's, on the device and on the CPU, and against the reference
implementation's own detections of the fixtures' photograph; and (e), with PyAV, a 1080p H.264 clip at one frame a
second through the service, each stage's seconds. `--parts images` or `--parts video` runs one side alone.
`--device cpu` runs the same script on CPU, as a smoke test of the script: its numbers say nothing of a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deploy.model_dir import assemble_model_dir
from efficientdet import Detection, Detector, get_config
from request_handling.images import decode_image, decode_jpegs_on_device, jpeg_for_device

from . import cpu_name, environment, write_json, write_report
from .latency import bench_model
from .samples import (
    FOUND_IOU,
    FOUND_SCORE,
    REFERENCE,
    SAMPLE,
    default_checkpoint,
    fidelity_images,
    found_again,
    partners_found,
    video_frame,
)
from .timing import p50_p95_ms, percentile

REPO = Path(__file__).resolve().parents[1]
FRAME = (1920, 1080)
LIMITS = (50_000_000, 100_000_000)
DTYPES = {"float16": True, "float32": False}
FIXTURE_PHOTO = "coffee.png (fixtures)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call: Callable[[], object], rounds: int, warm_up: int = 2) -> list[float]:
    """Seconds per call, after `warm_up` untimed calls."""
    for _ in range(warm_up):
        call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def bench_realtime(model_dir: Path, half: bool, graphs: bool, batch_sizes: list[int], rounds: int) -> dict:
    """(a) model_fn's cold start, then a 1080p JPEG body → JSON through the four handler functions."""
    import inference  # the toolkit's errors module: imported here so that --help works without it

    body = video_frame(*FRAME)
    with environment(USE_FLOAT16=str(half).lower(), CUDA_GRAPHS=str(graphs).lower(),
                     BATCH_SIZE=str(max(batch_sizes))):
        start = time.perf_counter()
        service = inference.model_fn(str(model_dir))
        cold = time.perf_counter() - start

    def request() -> str:
        return inference.transform_fn(service, body, "image/jpeg", "application/json")[0]

    samples = timed(request, rounds, warm_up=3)
    return {"cold_start_s": cold, "realtime": p50_p95_ms(samples), "service": service}


def bench_batches(detector: Detector, batch_sizes: list[int], rounds: int) -> dict:
    """(b) JPEG bytes → detections per batch size, each stage timed to its end on the device."""
    device = detector.device
    header = jpeg_for_device(video_frame(*FRAME), *LIMITS)
    rows = {}
    for size in batch_sizes:
        headers = [header] * size
        stages: dict[str, list[float]] = {"decode": [], "letterbox": [], "network": [], "post-processing": []}
        totals = []
        for round_ in range(rounds + 2):
            clock = [time.perf_counter()]
            pixels = decode_jpegs_on_device(headers, device)
            synchronize(device)
            clock.append(time.perf_counter())
            batch, placements = detector.preprocess(pixels)
            synchronize(device)
            clock.append(time.perf_counter())
            outputs = detector.forward(batch)
            synchronize(device)
            clock.append(time.perf_counter())
            detector.postprocess(*outputs, placements, [0.2] * size, [0.2] * size, [100] * size)
            clock.append(time.perf_counter())
            if round_ >= 2:
                for stage, start, end in zip(stages, clock, clock[1:]):
                    stages[stage].append(end - start)
                totals.append(clock[-1] - clock[0])
        rows[str(size)] = {"stages_p50_ms": {stage: 1000 * percentile(s, 50) for stage, s in stages.items()},
                           "batch_p50_ms": 1000 * percentile(totals, 50),
                           "images_per_s": size / percentile(totals, 50)}
    return rows


def bench_decoders(detector: Detector, rounds: int) -> dict:
    """The device decoder against Pillow's, on 1080p frames at quality 90 and 75: time and detections found again."""
    results = {}
    for quality in (90, 75):
        data = video_frame(*FRAME, quality=quality)
        header = jpeg_for_device(data, *LIMITS)
        device_pixels = decode_jpegs_on_device([header], detector.device)[0]
        cpu_pixels = decode_image(data, *LIMITS).pixels
        on_device = detector.detect([device_pixels])[0]
        on_cpu = detector.detect([cpu_pixels])[0]
        difference = (device_pixels.permute(1, 2, 0).cpu().int() - torch.tensor(cpu_pixels).int()).abs()

        def device_decode(header=header) -> None:
            decode_jpegs_on_device([header], detector.device)
            synchronize(detector.device)

        results[f"quality {quality}"] = {
            "device_decode": p50_p95_ms(timed(device_decode, rounds)),
            "cpu_decode": p50_p95_ms(timed(lambda data=data: decode_image(data, *LIMITS), rounds)),
            "pixels_max_difference": int(difference.max()), "pixels_mean_difference": float(difference.float().mean()),
            "pixels_differing_share": float((difference > 0).float().mean()),
            "cpu_detections_found_again": partners_found(on_cpu, on_device, min_score=0.2),
        }
    return results


def bench_clip(detector: Detector, seconds: int) -> dict:
    """(e) a `seconds`-long 1080p30 H.264 clip at 10 Mb/s, made by PyAV's x264, at one frame a second through the
    service with this machine's served defaults (decoded on the CPU by PyAV, letterboxed and detected on the
    device, `BATCH_SIZE` frames a pass): the seconds, frames/s and each stage's seconds summed over the clip, of
    the second of two requests (the first warms the decoder and the batch sizes up)."""
    if importlib.util.find_spec("av") is None:
        return {"skipped": "PyAV (av) is not importable here; `make gpu-av` puts its wheel in build/gpu-av, which "
                           "bench/gpu-check.sh unpacks"}
    from request_handling.bodies import EntryRequest
    from request_handling.service import DetectionService

    from .video import encoded_by_pyav, served_settings, timed_request

    with tempfile.TemporaryDirectory() as folder:
        clip = encoded_by_pyav(Path(folder) / "clip.mp4", FRAME, 30, seconds)
        data = clip.read_bytes()
        decoders = clip_decoders(clip)
    service = DetectionService(detector, served_settings())
    request = EntryRequest(inline=data, sample_fps=1.0)
    timed_request(service, request)
    return timed_request(service, request) | {"clip_seconds": seconds, "clip_mb": len(data) / 1e6,
                                               "batch_size": service.settings.batch_size, "decoders": decoders}


def clip_decoders(clip: Path, every: int = 30) -> dict:
    """Every frame of the clip decoded by FFmpeg's software decoder (with frame threads, as the service decodes)
    and by NVDEC (FFmpeg's `cuda` hardware decoding, frames downloaded to memory), each one's frames/s (every
    `every`-th frame converted to RGB too), and those frames' RGB pixels compared; NVDEC's error where it does not
    run. Not the service's path: what an NVDEC decode would give it."""
    import av
    from av.codec.hwaccel import HWAccel

    def decoded(hardware: bool) -> tuple[float, list[np.ndarray], str]:
        start, frames, layout = time.perf_counter(), [], ""
        hwaccel = HWAccel("cuda", allow_software_fallback=False) if hardware else None
        with av.open(str(clip), hwaccel=hwaccel) as container:
            stream = container.streams.video[0]
            if not hardware:
                stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                layout = frame.format.name
                if index % every == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
        return (index + 1) / (time.perf_counter() - start), frames, layout

    software_rate, software, _ = decoded(False)
    row: dict = {"software_frames_per_s": software_rate}
    try:
        nvdec_rate, nvdec, layout = decoded(True)
    except (av.FFmpegError, OSError, RuntimeError, ValueError) as error:
        return row | {"nvdec_error": f"{type(error).__name__}: {error}"}
    differences = [int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(software, nvdec)]
    return row | {"nvdec_frames_per_s": nvdec_rate, "nvdec_format": layout, "frames_compared": len(differences),
                  "frames_equal": differences.count(0), "max_difference": max(differences, default=0),
                  "frames": [len(software), len(nvdec)]}


def reference_detections() -> tuple[np.ndarray, list[Detection]] | None:
    """The fixtures' photograph and the reference implementation's detections of it (boxes clipped to the image, as
    ours are), where the fixtures are at hand."""
    if not (REFERENCE / "d0-coffee.json").is_file():
        return None
    expected = json.loads((REFERENCE / "d0-coffee.json").read_text())
    width, height = expected["width"], expected["height"]
    detections = [Detection(d["class_id"], str(d["class_id"]), d["score"],
                            (min(max(d["box"][0], 0), width), min(max(d["box"][1], 0), height),
                             min(max(d["box"][2], 0), width), min(max(d["box"][3], 0), height)))
                  for d in expected["detections"]]
    return np.asarray(Image.open(REFERENCE / "coffee.png").convert("RGB")), detections


@contextmanager
def tf32_convolutions(allowed: bool) -> Iterator[None]:
    """cuDNN's float32 convolutions with TF32 tensor cores (torch's default) or without (ours), while inside."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def bench_float16_fidelity(checkpoint: str | None, device: torch.device) -> dict:
    """(d) D0 in float16 on the device against float32 there and on the CPU (the path the equivalence tests hold to
    the reference implementation), per image: how many of one's detections the other finds again at IoU ≥ 0.95 and
    score ±0.01 (up to 1 000 per image, score ≥ 0.2); and float32 with cuDNN's TF32 on (torch's default, not ours)
    against the CPU's. On CPU there is no float16 nor TF32: every row runs float32."""
    model = bench_model(0, checkpoint)  # each Detector folds its own copy
    detectors = {"CPU float32": Detector(model, cuda_graphs=False),
                 "float32": Detector(model, device=device, cuda_graphs=False),
                 "float16": Detector(model, device=device, half=device.type == "cuda", cuda_graphs=False)}
    images = fidelity_images(np.asarray(Image.open(SAMPLE).convert("RGB")))
    reference = reference_detections()
    if reference:
        images[FIXTURE_PHOTO] = reference[0]
    rows: dict = {}
    for label, pixels in images.items():
        found = {name: detector.detect([pixels], max_detections=1000)[0] for name, detector in detectors.items()}
        with tf32_convolutions(True):
            found["float32, TF32 on"] = detectors["float32"].detect([pixels], max_detections=1000)[0]
        pairs = [("float32", "float16"), ("float16", "float32"), ("CPU float32", "float16"), ("CPU float32", "float32"),
                 ("CPU float32", "float32, TF32 on")]
        if label == FIXTURE_PHOTO:
            pairs += [("reference implementation", name) for name in found]
            found["reference implementation"] = reference[1]
        rows[label] = {f"{first} → {second}": found_again(found[first], found[second]) for first, second in pairs}
    return rows


def batch_sizes_for(coef: int, batch_sizes: list[int]) -> list[int]:
    """The batch sizes to time for a coefficient: those whose pixels per batch stay within batch 64 at D0's 512 px
    (a D4 at 1024 px: up to 16), so that a large coefficient fits the card's memory; at least batch 1."""
    pixels = (get_config(coef).input_size / get_config(0).input_size) ** 2
    return [size for size in batch_sizes if size * pixels <= max(batch_sizes)] or [1]


def gpu_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    results: dict = {"machine": machine(device), "date": time.strftime("%Y-%m-%d"), "configurations": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for coef in args.coefs:
            checkpoint = args.checkpoint if coef == 0 and args.checkpoint else None
            model_dir = assemble_model_dir(Path(tmp) / f"d{coef}", coef, checkpoint, read_only=False)
            for dtype in args.dtypes:
                for graphs in (choice == "on" for choice in args.graphs):
                    half = DTYPES[dtype] and device.type == "cuda"
                    name = f"D{coef}, {'float16' if half else 'float32'}, CUDA graphs {'on' if graphs else 'off'}"
                    if name in results["configurations"]:
                        continue
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    sizes = batch_sizes_for(coef, args.batch_sizes)
                    row = bench_realtime(model_dir, half, graphs, sizes, args.rounds)
                    detector = row.pop("service").detector
                    if "images" in args.parts:
                        row["batches"] = bench_batches(detector, sizes, args.rounds)
                        row["peak_gpu_memory_mb"] = gpu_memory_mb(device)
                        if coef == args.coefs[0] and "decoders" not in results:
                            results["decoders"] = bench_decoders(detector, args.rounds)
                    if "video" in args.parts and args.video_seconds and "video" not in results:
                        results["video"] = {"configuration": name} | bench_clip(detector, args.video_seconds)
                    results["configurations"][name] = row
                    print(f"{name}: realtime p50 {row['realtime']['p50_ms']:.1f} ms", flush=True)
                    del detector
                    if coef == 0 and "float16_fidelity" not in results and "images" in args.parts:
                        results["float16_fidelity"] = bench_float16_fidelity(args.checkpoint, device)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    write_json(results, args.json)  # what is measured so far, should the run be stopped
    return results


def machine(device: torch.device) -> str:
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu_name()}, {os.cpu_count()} cores)"
    return f"{card}, {platform.machine()}, torch {torch.__version__}"


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']}, {results['date']}.", "",
             "| configuration | cold start s | realtime p50 ms | realtime p95 ms | peak GPU MB |", "| --- | --- | --- | --- | --- |"]
    for name, row in results["configurations"].items():
        memory = row.get("peak_gpu_memory_mb")
        lines.append(f"| {name} | {row['cold_start_s']:.1f} | {row['realtime']['p50_ms']:.1f} | "
                     f"{row['realtime']['p95_ms']:.1f} | {'' if memory is None else f'{memory:.0f}'} |")
    if any("batches" in row for row in results["configurations"].values()):
        lines += images_markdown(results)
    return "\n".join(lines + clip_markdown(results.get("video")))


def images_markdown(results: dict) -> list[str]:
    lines = ["", "| configuration | batch | decode ms | letterbox ms | network ms | post-processing ms | images/s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in results["configurations"].items():
        for size, batch in row["batches"].items():
            stages = batch["stages_p50_ms"]
            lines.append(f"| {name} | {size} | " + " | ".join(f"{stages[s]:.1f}" for s in stages)
                         + f" | {batch['images_per_s']:.0f} |")
    lines += ["", "| 1080p JPEG | device decode p50 ms | Pillow decode p50 ms | pixels differing | max / mean difference "
                  "| CPU-decode detections found again |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in results["decoders"].items():
        found, wanted = row["cpu_detections_found_again"]
        lines.append(f"| {name} | {row['device_decode']['p50_ms']:.1f} | {row['cpu_decode']['p50_ms']:.1f} | "
                     f"{100 * row['pixels_differing_share']:.1f} % | {row['pixels_max_difference']} / "
                     f"{row['pixels_mean_difference']:.2f} | {found} of {wanted} |")
    lines += ["", f"D0: detections (score ≥ 0.2) of the first found again by the second, same class, IoU ≥ {FOUND_IOU}, "
                  f"score ±{FOUND_SCORE}; on the device unless CPU is named",
              "", "| image | first → second | found again | largest score change |", "| --- | --- | --- | --- |"]
    for image, comparisons in results.get("float16_fidelity", {}).items():
        for name, row in comparisons.items():
            lines.append(f"| {image} | {name} | {row['found']} of {row['of']} | {row['largest_score_change']:.1e} |")
    return lines


def clip_markdown(video: dict | None) -> list[str]:
    if not video:
        return []
    if "skipped" in video:
        return ["", f"Clip: skipped ({video['skipped']})."]
    stages = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in video["stages_s"].items())
    return ["", f"Clip ({video['configuration']}, batch {video['batch_size']}): {video['clip_seconds']} s of 1080p30 "
                f"H.264 at 10 Mb/s ({video['clip_mb']:.0f} MB) at one frame a second, {video['frames']} frames"
                f"{' (error)' if video['error'] else ''} in {video['seconds']:.2f} s ({video['frames_per_s']:.1f} "
                f"frames/s); stages summed over the clip: {stages}.", "", decoders_markdown(video["decoders"])]


def decoders_markdown(decoders: dict) -> str:
    software = f"Decoding all its frames: FFmpeg's software decoder {decoders['software_frames_per_s']:.0f} frames/s"
    if "nvdec_error" in decoders:
        return f"{software}; NVDEC did not run ({decoders['nvdec_error']})."
    return (f"{software}, NVDEC {decoders['nvdec_frames_per_s']:.0f} frames/s (as {decoders['nvdec_format']}); of "
            f"{decoders['frames_compared']} frames compared in RGB, {decoders['frames_equal']} equal, the largest "
            f"difference {decoders['max_difference']} levels.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--coefs", type=int, nargs="+", default=[0, 4], help="coefficients (default: D0 and D4)")
    parser.add_argument("--checkpoint", help="D0 checkpoint (default: weights/, else the reference fixture beside "
                                             "the clone, else generated untrained weights)")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float16", "float32"])
    parser.add_argument("--graphs", nargs="+", choices=["on", "off"], default=["on", "off"],
                        help="CUDA graphs on and/or off")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--parts", nargs="+", choices=["images", "video"], default=["images", "video"],
                        help="(a)-(d) on images and/or (e) the clip")
    parser.add_argument("--video-seconds", type=int, default=60, help="length of (e)'s clip (0: skip it)")
    parser.add_argument("--json", default=str(REPO / "build" / "bench" / "gpu.json"))
    args = parser.parse_args(argv)
    args.checkpoint = args.checkpoint or default_checkpoint(0)
    results = run(args)
    write_report(results, markdown(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
