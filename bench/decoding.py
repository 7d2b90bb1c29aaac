"""(d) the opt-in JPEG_REDUCED_DECODE against the full decode on video frames, and (e) the CPU letterbox, OpenCV's
against torch's."""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from efficientdet import Detector
from efficientdet.preprocess import letterbox, letterbox_tensor
from request_handling.images import decode_image

from .samples import FRAME_SIZES, SAMPLE, partners_found, video_frame
from .timing import p50_p95_ms, percentile


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


def decoding_markdown(results: dict) -> list[str]:
    lines: list[str] = []
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
    return lines
