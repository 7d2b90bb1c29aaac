"""(g) our network against the runtimes a user could swap in for it, ONNX Runtime and OpenVINO running our own
ONNX export, per precision: the network alone and decoded image → detections, interleaved round by round; and
what each reduced precision does to the detections.

Every runtime gets the same threads and one stream. Around ONNX Runtime and OpenVINO, pre- and post-processing
are ours (as docs/export.md shows): only the network differs. ONNX Runtime's idle threads do not spin
(`session.intra_op.allow_spinning=0`): spinning, they take the cores the next runtime in the round runs on.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from efficientdet import Detection, Detector, EfficientDet
from efficientdet.export import export
from efficientdet.layers import native_bfloat16

from .samples import FOUND_IOU, FOUND_SCORE, fidelity_images, found_again
from .timing import percentile


class ExportedNetwork:
    """Our ONNX export in another runtime, behind our own pre- and post-processing (a float32 Detector's)."""

    def __init__(self, run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], around: Detector) -> None:
        self.run, self.around = run, around

    def forward(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self.run(batch.contiguous().numpy())

    def detect(self, images: list[np.ndarray], score_threshold: float = 0.2, iou_threshold: float = 0.2,
               max_detections: int = 100) -> list[list[Detection]]:
        batch, placements = self.around.preprocess(images)
        regression, logits = self.forward(batch)
        anchors = self.around.anchors.get(batch.shape[-1], batch.device)
        count = len(images)
        return self.around.postprocess(torch.from_numpy(regression), torch.from_numpy(logits), anchors, placements,
                                       [score_threshold] * count, [iou_threshold] * count, [max_detections] * count)


def onnx_runtime(path: Path, threads: int, around: Detector) -> ExportedNetwork:
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return ExportedNetwork(lambda batch: tuple(session.run(None, {"images": batch})), around)


def openvino(path: Path, threads: int, precision: str, around: Detector) -> ExportedNetwork:
    """OpenVINO's CPU plugin at a precision hint: "f32", or "bf16" (its default on a CPU with BF16)."""
    import openvino as ov
    compiled = ov.Core().compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1",
        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = request.infer({0: batch}, share_inputs=True, share_outputs=True)  # its fastest call: no copies
        return tuple(outputs[compiled.output(name)] for name in ("regression", "class_logits"))
    return ExportedNetwork(run, around)


def runtimes(model: EfficientDet, threads: int) -> dict[str, dict[str, object]]:
    """Per precision, the runtimes that run it here: {precision: {name: Detector or ExportedNetwork}}."""
    ours = Detector(model)
    with tempfile.TemporaryDirectory() as folder:
        path = export(model, ours.input_size, "onnx", Path(folder) / "network.onnx")
        chosen: dict[str, dict[str, object]] = {"float32": {
            "ours (fast path)": ours, "ONNX Runtime": onnx_runtime(path, threads, ours),
            "OpenVINO": openvino(path, threads, "f32", ours)}}
        if native_bfloat16():
            chosen["bfloat16"] = {"ours (CPU_PRECISION=bfloat16)": Detector(model, bfloat16=True),
                                  "OpenVINO": openvino(path, threads, "bf16", ours)}
    return chosen


def fixed_cost(model: EfficientDet, ours: Detector, threads: int, rounds: int) -> dict:
    """float32, the network alone at the smallest input the model takes (a sixteenth of D0's pixels at 128 px), each
    runtime on an export of that size: what a forward pass costs beyond its arithmetic (calls, dispatch,
    allocation), which a compiled graph pays once and an eager network on every call."""
    size = ours.config.size_multiple
    batch = torch.zeros(1, 3, size, size).contiguous(memory_format=ours.memory_format)
    with tempfile.TemporaryDirectory() as folder:
        path = export(model, size, "onnx", Path(folder) / "network.onnx")
        networks = {"ours (fast path)": ours, "ONNX Runtime": onnx_runtime(path, threads, ours),
                    "OpenVINO": openvino(path, threads, "f32", ours)}
    network_ms = time_interleaved({name: lambda n=network: n.forward(batch) for name, network in networks.items()},
                                  rounds)
    # oneDNN may refuse a size the default one compiles at (a Zen 4's, 128 px, with some torch versions)
    graph = any(shape[-1] == size for shape, _, _ in getattr(ours.model, "compiled", {}))
    return {"input_size": size, "network_p50_ms": network_ms, "ours_as_graph": graph}


def time_interleaved(calls: dict[str, Callable[[], object]], rounds: int, repeats: int = 3) -> dict[str, float]:
    """p50 ms per call, the calls interleaved round by round, `repeats` in a row each (the first one not timed)."""
    for call in calls.values():
        call()
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for repeat in range(repeats):
                start = time.perf_counter()
                call()
                if repeat:
                    samples[name].append(time.perf_counter() - start)
    return {name: 1000 * percentile(s, 50) for name, s in samples.items()}


def bench_runtimes(model: EfficientDet, image: np.ndarray, rounds: int) -> dict:
    """(g) per precision and runtime: the network alone and image → detections p50 ms, the ratio to ours, and per
    image how many of our float32 detections each finds again."""
    threads = torch.get_num_threads()
    chosen = runtimes(model, threads)
    reference = chosen["float32"]["ours (fast path)"]
    batch, _ = reference.preprocess([image])
    images = fidelity_images(image)
    expected = {label: reference.detect([pixels])[0] for label, pixels in images.items()}
    results: dict = {"threads": threads, "fixed_cost": fixed_cost(model, reference, threads, rounds)}
    for precision, networks in chosen.items():
        inputs = {name: batch.to(network.dtype) if isinstance(network, Detector) else batch
                  for name, network in networks.items()}
        network_ms = time_interleaved({name: lambda n=network, x=inputs[name]: n.forward(x)
                                       for name, network in networks.items()}, rounds)
        image_ms = time_interleaved({name: lambda n=network: n.detect([image])
                                     for name, network in networks.items()}, rounds)
        fidelity = {}
        for label, pixels in images.items():
            fidelity[label] = {name: found_again(expected[label], network.detect([pixels], max_detections=1000)[0])
                               for name, network in networks.items()}
        results[precision] = {"network_p50_ms": network_ms, "image_p50_ms": image_ms, "fidelity": fidelity}
    return results


def runtimes_markdown(results: dict, machine: str) -> list[str]:
    lines = ["", f"Runtimes on {machine}, one stream each, batch 1 (found again: our "
                 f"float32 detections with a same-class partner at IoU ≥ {FOUND_IOU} and score ±{FOUND_SCORE}, "
                 "over the sample photo and two generated photos):", "",
             "| precision | runtime | network p50 ms | ÷ ours | image → detections p50 ms | ÷ ours | found again "
             "| largest score change |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for precision in ("float32", "bfloat16"):
        if precision not in results:
            continue
        row = results[precision]
        ours = next(iter(row["network_p50_ms"]))
        for name in row["network_p50_ms"]:
            scores = [row["fidelity"][label][name] for label in row["fidelity"]]
            found, total = sum(s["found"] for s in scores), sum(s["of"] for s in scores)
            largest = max(s["largest_score_change"] for s in scores)
            lines.append(f"| {precision} | {name} | {row['network_p50_ms'][name]:.1f} | "
                         f"{row['network_p50_ms'][name] / row['network_p50_ms'][ours]:.2f} | "
                         f"{row['image_p50_ms'][name]:.1f} | {row['image_p50_ms'][name] / row['image_p50_ms'][ours]:.2f} | "
                         f"{found} of {total} | {largest:.1e} |")
    if "bfloat16" not in results:
        lines.append("| bfloat16 | not measured: this CPU has no native bfloat16 | | | | | | |")
    fixed = results.get("fixed_cost")
    if fixed:
        times = fixed["network_p50_ms"]
        lines += ["", f"What a pass costs beyond its arithmetic, float32, the network alone at {fixed['input_size']} px "
                      "(same threads, interleaved): " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in times.items())
                  + ("." if fixed.get("ours_as_graph") else "; ours as the eager network: no oneDNN Graph at this "
                                                             "size here (refused, or none in this torch).")]
    return lines
