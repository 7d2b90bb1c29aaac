"""`make bench`: fast against plain eager path per image, the served endpoint, both servers, cold start, reduced JPEG decode.

Modes are timed side by side in one run, interleaved, and reported as ratios: these machines are
shared and noisy, so absolute numbers move between runs more than ratios do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

from efficientdet import Detector, EfficientDet, get_config
from efficientdet.preprocess import letterbox, letterbox_tensor
from efficientdet.untrained import untrained_state_dict
from localrun.ports import free_port
from localrun.s3server import SeaweedS3
from localrun.serve import ModelServer
from request_handling.images import decode_image

from . import cpu_machine, write_report
from .samples import FRAME_SIZES, SAMPLE, default_checkpoint, partners_found, video_frame
from .servers import bench_servers, servers_markdown
from .timing import p50_p95_ms, percentile, timed_load

REPO = Path(__file__).resolve().parents[1]
BUCKET = "videoblocks-ml"
KEY_PREFIX = "bench/frame-"


def detectors(coef: int, checkpoint: str | None) -> dict[str, Detector]:
    model = EfficientDet(get_config(coef))
    if checkpoint:
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
    else:
        model.load_state_dict(untrained_state_dict(coef))
    return {"plain eager": Detector(model, fast=False), "fast": Detector(model, fast=True)}


def bench_latency(modes: dict[str, Detector], rounds: int, image: np.ndarray, batch: int) -> dict:
    """(a) decoded image → detections, per image, the modes interleaved round by round; then the fast
    path with `batch` images per forward pass (a quarter of the rounds), per image."""
    for detector in modes.values():
        for _ in range(3):
            detector.detect([image])
    samples: dict[str, list[float]] = {name: [] for name in modes}
    stages: dict[str, dict[str, list[float]]] = {name: {} for name in modes}
    for _ in range(rounds):
        for name, detector in modes.items():
            timings: dict[str, float] = {}
            start = time.perf_counter()
            detector.detect([image], timings=timings)
            samples[name].append(time.perf_counter() - start)
            for stage, seconds in timings.items():
                stages[name].setdefault(stage, []).append(seconds)
    batched = f"fast, {batch} images per forward pass"
    samples[batched] = []
    modes["fast"].detect([image] * batch)
    for _ in range(max(1, rounds // 4)):
        start = time.perf_counter()
        modes["fast"].detect([image] * batch)
        samples[batched].append((time.perf_counter() - start) / batch)
    results = {name: p50_p95_ms(s) for name, s in samples.items()}
    for name, per_stage in stages.items():
        results[name]["stages_p50_ms"] = {stage: 1000 * percentile(s, 50) for stage, s in per_stage.items()}
    results["speedup_p50"] = results["plain eager"]["p50_ms"] / results["fast"]["p50_ms"]
    return results


def bench_letterbox(size: int, rounds: int) -> dict:
    """(e) the CPU letterbox, OpenCV (the CPU path's) against torch (the GPU path's, here on CPU), per image size."""
    results = {}
    for width, height in ((600, 400), FRAME_SIZES[0]):
        image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((width, height)))
        canvas = torch.empty(3, size, size)
        modes = {"OpenCV": lambda image=image: letterbox(image, size),
                 "torch": lambda image=image, canvas=canvas: letterbox_tensor(torch.tensor(image).permute(2, 0, 1),
                                                                              size, canvas)}
        samples: dict[str, list[float]] = {name: [] for name in modes}
        for _ in range(rounds + 2):
            for name, call in modes.items():
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
        results[f"{width}x{height}"] = {name: 1000 * percentile(s[2:], 50) for name, s in samples.items()}
    return results


def bench_reduced_decode(detector: Detector, rounds: int) -> dict:
    """(d) the opt-in JPEG_REDUCED_DECODE: JPEG bytes → detections for video frames, full against reduced decode."""
    reduce_to = {"full decode": None, "reduced decode": detector.input_size}
    results = {}
    for width, height in FRAME_SIZES:
        data = video_frame(width, height)
        samples: dict[str, list[float]] = {name: [] for name in reduce_to}
        found = {}
        for _ in range(rounds + 2):
            for name, size in reduce_to.items():
                start = time.perf_counter()
                image = decode_image(data, len(data), width * height, reduce_to=size)
                found[name] = detector.detect([image.pixels], full_sizes=[(image.width, image.height)])[0]
                samples[name].append(time.perf_counter() - start)
        row = {name: p50_p95_ms(s[2:]) for name, s in samples.items()}
        row["speedup_p50"] = row["full decode"]["p50_ms"] / row["reduced decode"]["p50_ms"]
        row["partners_found"] = partners_found(found["full decode"], found["reduced decode"])
        results[f"{width}x{height}"] = row
    return results


def bench_server(coef: int, checkpoint: str | None, rounds: int, batch: int) -> dict:
    """(b) end to end through the real server and S3 on loopback; (c) its cold start."""
    out: dict = {}
    with SeaweedS3() as s3:
        data = SAMPLE.read_bytes()
        keys = [f"{KEY_PREFIX}{i:03d}.jpg" for i in range(batch)]
        for key in keys:
            s3.put(BUCKET, key, data)
        port = free_port()
        with ModelServer(coef=coef, port=port, weights=checkpoint, env=s3.env(),
                         log_path=REPO / "build" / "bench" / "server.log") as server:
            out["cold_start"] = {"ping_s": server.ping_seconds, "model_loaded_s": server.ready_seconds}
            url = f"http://127.0.0.1:{port}/invocations"

            def single(i: int) -> int:
                body = json.dumps({"bucket": BUCKET, "key": keys[i % batch]})
                response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120)
                response.raise_for_status()
                return 1

            def batched(_: int) -> int:
                body = "\n".join(json.dumps({"bucket": BUCKET, "key": k}) for k in keys)
                response = requests.post(url, data=body, headers={"Content-Type": "application/jsonlines"}, timeout=300)
                response.raise_for_status()
                return batch

            for name, call, requests_per_round in (("single-image", single, batch), (f"batched ({batch}/request)", batched, 1)):
                for concurrency in (1, 4):
                    call(0)
                    out[f"{name}, concurrency {concurrency}"] = timed_load(call, rounds * requests_per_round,
                                                                           concurrency)
    rows = {k: v["images_per_s"] for k, v in out.items() if isinstance(v, dict) and "images_per_s" in v}
    single = {k.rsplit(" ", 1)[1]: v for k, v in rows.items() if k.startswith("single")}
    batched = {k.rsplit(" ", 1)[1]: v for k, v in rows.items() if k.startswith("batched")}
    out["batched_over_single_throughput"] = {
        **{f"concurrency {c}": batched[c] / single[c] for c in single},
        "best over best": max(batched.values()) / max(single.values()),
    }
    return out


def markdown(results: dict) -> str:
    latency = results["latency"]
    lines = [f"Machine: {results['machine']}; EfficientDet-D{results['coef']}, input {results['input_size']}, "
             f"{'checkpoint ' + results['checkpoint'] if results['checkpoint'] else 'untrained weights'}.", "",
             "| per image, decoded image → detections | p50 ms | p95 ms | pre-process p50 ms | network p50 ms "
             "| NMS p50 ms |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in latency.items():
        if isinstance(row, dict):
            stages = row.get("stages_p50_ms", {})
            lines.append(f"| {name} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
                         + " | ".join(f"{stages[s]:.1f}" if s in stages else "" for s in ("preprocess", "network", "nms"))
                         + " |")
    plain, fast = latency["plain eager"], latency["fast"]
    stage_ratios = " | ".join(f"{fast['stages_p50_ms'][s] / plain['stages_p50_ms'][s]:.2f}"
                              for s in ("preprocess", "network", "nms"))
    lines.append(f"| **fast ÷ plain (p50)** | **{1 / latency['speedup_p50']:.2f}** "
                 f"(speed-up {latency['speedup_p50']:.2f}×) | | {stage_ratios} |")
    server = results.get("server")
    if server:
        lines += ["", "| served endpoint (S3 on loopback) | request p50 ms | request p95 ms | images/s |",
                  "| --- | --- | --- | --- |"]
        for name, row in server.items():
            if isinstance(row, dict) and "images_per_s" in row:
                lines.append(f"| {name} | {row['request_p50_ms']:.0f} | {row['request_p95_ms']:.0f} | {row['images_per_s']:.2f} |")
        for name, ratio in server["batched_over_single_throughput"].items():
            lines.append(f"| **batched ÷ single-image throughput, {name}** | | | **{ratio:.2f}×** |")
        cold = server["cold_start"]
        lines += ["", f"Cold start: /ping answers 200 after {cold['ping_s']:.1f} s, the model is loaded after "
                      f"{cold['model_loaded_s']:.1f} s (warm-up included)."]
    if results.get("servers"):
        lines += servers_markdown(results["servers"])
    reduced = results.get("reduced_decode")
    if reduced:
        lines += ["", "| opt-in `JPEG_REDUCED_DECODE`, JPEG bytes → detections | full decode p50 ms | "
                      "reduced decode p50 ms | speed-up | full-decode detections (score ≥ 0.25) found again |",
                  "| --- | --- | --- | --- | --- |"]
        for frame, row in reduced.items():
            found, wanted = row["partners_found"]
            lines.append(f"| {frame} frame | {row['full decode']['p50_ms']:.1f} | "
                         f"{row['reduced decode']['p50_ms']:.1f} | {row['speedup_p50']:.2f}× | {found} of {wanted} |")
    if results.get("letterbox"):
        lines += ["", "| CPU letterbox, p50 ms | OpenCV (the CPU path) | torch (the GPU path, here on CPU) |",
                  "| --- | --- | --- |"]
        for size, row in results["letterbox"].items():
            lines.append(f"| {size} image | {row['OpenCV']:.2f} | {row['torch']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coef", type=int, choices=range(9), default=0)
    parser.add_argument("--checkpoint", help="checkpoint to time (default: weights/, else for D0 the reference "
                                             "fixture, else generated untrained weights)")
    parser.add_argument("--untrained", action="store_true", help="time generated untrained weights, whatever is in weights/")
    parser.add_argument("--rounds", type=int, default=30, help="timed images per mode")
    parser.add_argument("--rounds-extras", type=int, default=15, help="timed frames per opt-in mode (0: skip)")
    parser.add_argument("--server-rounds", type=int, default=8, help="rounds of requests per server mode")
    parser.add_argument("--batch", type=int, default=8, help="images per batched forward pass and request")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--skip-servers", action="store_true", help="skip TorchServe against Ray Serve")
    parser.add_argument("--json", default=str(REPO / "build" / "bench" / "results.json"))
    args = parser.parse_args(argv)
    if args.untrained and args.checkpoint:
        parser.error("--untrained and --checkpoint exclude each other")
    args.checkpoint = None if args.untrained else args.checkpoint or default_checkpoint(args.coef)
    image = np.asarray(Image.open(SAMPLE).convert("RGB"))
    modes = detectors(args.coef, args.checkpoint)
    results = {"machine": cpu_machine(), "coef": args.coef, "input_size": get_config(args.coef).input_size,
               "checkpoint": args.checkpoint, "latency": bench_latency(modes, args.rounds, image, args.batch)}
    if args.rounds_extras:
        results["reduced_decode"] = bench_reduced_decode(modes["fast"], args.rounds_extras)
        results["letterbox"] = bench_letterbox(modes["fast"].input_size, 4 * args.rounds_extras)
    if not args.skip_server:
        results["server"] = bench_server(args.coef, args.checkpoint, args.server_rounds, args.batch)
    if not args.skip_server and not args.skip_servers:
        results["servers"] = bench_servers(args.coef, args.checkpoint, args.server_rounds, SAMPLE.read_bytes())
    write_report(results, markdown(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
