"""(a) per image, decoded image → detections: the fast path against the plain eager path, interleaved round by round,
per stage, and the fast path with several images per forward pass."""

from __future__ import annotations

import time

import numpy as np
import torch

from efficientdet import Detector, EfficientDet, get_config
from efficientdet.untrained import untrained_state_dict

from .timing import p50_p95_ms, percentile


def bench_model(coef: int, checkpoint: str | None) -> EfficientDet:
    """The network the benchmark times: the checkpoint's weights, or generated untrained ones."""
    model = EfficientDet(get_config(coef))
    if checkpoint:
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
    else:
        model.load_state_dict(untrained_state_dict(coef))
    return model.eval()


def detectors(model: EfficientDet) -> dict[str, Detector]:
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
    modes["fast"].warm_up([batch])  # a oneDNN Graph network would otherwise run a batch size it has not compiled image by image
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


def latency_markdown(results: dict) -> list[str]:
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
    return lines
