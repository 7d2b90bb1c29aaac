"""The public API: load a checkpoint once, detect objects in decoded images of any size."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .anchors import AnchorCache
from .boxes import canvas_candidates, class_aware_nms, select_batch_detections, to_image_pixels
from .config import DEFAULT_ANCHOR_RATIOS, DEFAULT_ANCHOR_SCALES, validate_input_size
from .graphs import GraphedNetwork
from .labels import COCO_LABELS
from .layers import native_bfloat16
from .model import EfficientDet
from .onednn_graph import MAX_INPUT_SIZE as ONEDNN_GRAPH_MAX_INPUT_SIZE
from .onednn_graph import OneDNNGraphNetwork
from .optimize import optimize_for_inference
from .preprocess import Letterbox, letterbox, letterbox_tensor
from .weights import build_from_state_dict, load_state_dict

log = logging.getLogger(__name__)

BFLOAT16_UNSUPPORTED = ("bfloat16 needs a CPU that computes in it natively (x86: AVX-512 BF16 or AMX, as on "
                        "ml.c7i/m7i/r7i and ml.c7a/m7a; Arm: BF16, as on Graviton3 and 4), and this CPU has neither: "
                        "oneDNN would emulate it, slower than float32")


@dataclass(frozen=True)
class Detection:
    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels


def _per_image(value: float | Sequence[float], count: int, name: str) -> list:
    if isinstance(value, (int, float)):
        return [value] * count
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} entries for {count} images")
    return list(value)


class Detector:
    """EfficientDet with its pre- and post-processing; safe to share between threads."""

    def __init__(self, model: EfficientDet, *, input_size: int | None = None, labels: Sequence[str] | None = None,
                 anchor_scales: Sequence[float] | None = None,
                 anchor_ratios: Sequence[tuple[float, float]] | None = None,
                 device: str | torch.device = "cpu", half: bool = False, bfloat16: bool = False, fast: bool = True,
                 cuda_graphs: bool = True, onednn_graph: bool = True) -> None:
        """`half`: float16 on a GPU (a warning and float32 elsewhere). `bfloat16`: the network in bfloat16 on a CPU
        that computes in it natively (ValueError elsewhere); anchors and post-processing stay float32.
        `onednn_graph`: on CPU with a canvas of up to `onednn_graph.MAX_INPUT_SIZE` (float32 1024 px: D0-D4; bfloat16
        640 px: D0-D1), the fast path compiled as a oneDNN Graph per batch size (else its eager fused kernels)."""
        config = model.config
        self.config = config
        self.input_size = validate_input_size(config, input_size or config.input_size)
        self.device = torch.device(device)
        if half and self.device.type != "cuda":
            log.warning("half precision needs a CUDA device; running %s in float32 on %s", config.name, self.device)
            half = False
        if bfloat16 and (self.device.type != "cpu" or not native_bfloat16()):
            raise ValueError(BFLOAT16_UNSUPPORTED if self.device.type == "cpu" else
                             f"bfloat16 is the CPU's reduced precision; on {self.device} use half (float16)")
        self.dtype = torch.float16 if half else torch.bfloat16 if bfloat16 else torch.float32
        self.labels = tuple(labels) if labels is not None else COCO_LABELS
        if len(self.labels) != model.num_classes:
            raise ValueError(f"{len(self.labels)} labels given for a model with {model.num_classes} classes")
        scales = tuple(anchor_scales or DEFAULT_ANCHOR_SCALES)
        ratios = tuple(tuple(r) for r in (anchor_ratios or DEFAULT_ANCHOR_RATIOS))
        if len(scales) * len(ratios) != model.num_anchors:
            raise ValueError(f"{len(scales)} anchor scales × {len(ratios)} ratios do not make the "
                             f"checkpoint's {model.num_anchors} anchors per location")
        self.anchors = AnchorCache(config.levels, config.anchor_scale, scales, ratios)
        model = model.eval()
        onednn_graph = onednn_graph and self.input_size <= ONEDNN_GRAPH_MAX_INPUT_SIZE.get(self.dtype, 0)
        self.model = optimize_for_inference(model, self.device, self.dtype, onednn_graph) if fast \
            else model.to(self.device, self.dtype)
        self.memory_format = torch.channels_last if fast else torch.contiguous_format
        self.cuda_graphs = cuda_graphs and fast and self.device.type == "cuda"
        self.graphed: GraphedNetwork | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, compound_coef: int = 0, *, device: str | torch.device = "cpu",
                        half: bool = False, input_size: int | None = None, labels: Sequence[str] | None = None,
                        anchor_scales: Sequence[float] | None = None,
                        anchor_ratios: Sequence[tuple[float, float]] | None = None, bfloat16: bool = False,
                        fast: bool = True, cuda_graphs: bool = True, onednn_graph: bool = True) -> Detector:
        model = build_from_state_dict(load_state_dict(path), compound_coef)
        return cls(model, input_size=input_size, labels=labels, anchor_scales=anchor_scales,
                   anchor_ratios=anchor_ratios, device=device, half=half, bfloat16=bfloat16, fast=fast,
                   cuda_graphs=cuda_graphs, onednn_graph=onednn_graph)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def preprocess(self, images: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, list[Letterbox]]:
        """Letterbox RGB uint8 images, (H, W, 3) arrays or (3, H, W) tensors, into one (N, 3, S, S) batch on the
        model's device. On CPU in float32, arrays are letterboxed by OpenCV (the reference's own resize, whose canvas
        the equivalence tests were established on); on a GPU, in bfloat16 and for tensors, the uint8 pixels go to
        the device and are letterboxed there by torch, with the same rule (within 2e-4 of OpenCV's canvas: far below
        bfloat16's rounding, which this writes straight into instead of converting a float32 canvas)."""
        if self.dtype == torch.float32 and self.device.type == "cpu" and all(isinstance(image, np.ndarray)
                                                                             for image in images):
            size = self.input_size
            canvases = np.empty((len(images), size, size, 3), dtype=np.float32)
            boxes = [letterbox(image, size, out=canvas)[1] for image, canvas in zip(images, canvases)]
            batch = torch.from_numpy(canvases).permute(0, 3, 1, 2)
            return batch.contiguous(memory_format=self.memory_format), boxes
        return self._preprocess_on_device(images)

    def _preprocess_on_device(self, images: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, list[Letterbox]]:
        size = self.input_size
        batch = torch.empty(len(images), 3, size, size, device=self.device, dtype=self.dtype,
                            memory_format=self.memory_format)
        boxes = []
        for image, canvas in zip(images, batch):
            if isinstance(image, np.ndarray):
                image = self._upload(image)
            boxes.append(letterbox_tensor(image.to(self.device), size, canvas))
        return batch, boxes

    def _upload(self, image: np.ndarray) -> torch.Tensor:
        """An (H, W, 3) uint8 array as a (3, H, W) tensor on the device, through page-locked memory to a GPU
        (so that the copy runs without the host waiting for it)."""
        if self.device.type != "cuda":
            return torch.tensor(image).permute(2, 0, 1)
        pixels = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
        pixels.numpy()[...] = image
        return pixels.to(self.device, non_blocking=True).permute(2, 0, 1)

    def warm_up(self, batch_sizes: Iterable[int] = (1,)) -> None:
        """One forward pass per batch size on a blank canvas, so that kernels are chosen and weights
        packed before the first image arrives rather than during it; with CUDA graphs, each batch size's
        graph is captured here, and later batches are padded up to the next captured size."""
        size = self.input_size
        blank = torch.zeros(1, 3, size, size, device=self.device, dtype=self.dtype)
        blank = blank.contiguous(memory_format=self.memory_format)
        if self.cuda_graphs:
            try:
                self.graphed = GraphedNetwork(self.model, blank, batch_sizes)
                return
            except RuntimeError as error:  # a capture this network's kernels do not allow: serve eagerly
                log.warning("CUDA graph capture failed (%s); running %s eagerly", error, self.name)
                self.graphed = None
        for count in sorted(set(batch_sizes)):
            batch = blank.expand(count, -1, -1, -1).contiguous(memory_format=self.memory_format)
            if isinstance(self.model, OneDNNGraphNetwork):
                self.model.compile_for(batch)
            self.forward(batch)

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(regression, class logits, anchors) for a preprocessed batch, outputs in the network's dtype; anchors are
        float32 in any dtype (post-processing takes the candidates' values to float32)."""
        if self.graphed is not None and batch.shape[-1] == self.input_size:
            regression, class_logits = self.graphed(batch)
        else:
            with torch.inference_mode():
                regression, class_logits = self.model(batch)
        return regression, class_logits, self.anchors.get(batch.shape[-1], batch.device)

    def postprocess(self, regression: torch.Tensor, class_logits: torch.Tensor, anchors: torch.Tensor,
                    placements: Sequence[Letterbox], score_thresholds: Sequence[float],
                    iou_thresholds: Sequence[float], limits: Sequence[int]) -> list[list[Detection]]:
        """Detections per image from the network's outputs: thresholds, class-aware NMS, boxes in image pixels."""
        with torch.inference_mode():
            if self.device.type == "cuda":  # a few launches for the batch; on CPU the per-image loop is faster
                selected = select_batch_detections(class_logits, regression, anchors, self.input_size,
                                                   score_thresholds, iou_thresholds)
                found = []
                for placement, limit, (boxes, scores, classes) in zip(placements, limits, selected):
                    boxes, non_empty = to_image_pixels(boxes, placement.scale_x, placement.scale_y,
                                                       placement.width, placement.height)
                    kept = torch.nonzero(non_empty).squeeze(1)[:limit]
                    found.append((boxes[kept], scores[kept], classes[kept]))
            else:
                found = [self._image_detections(class_logits[i], regression[i], anchors, placement,
                                                score_thresholds[i], iou_thresholds[i], limits[i])
                         for i, placement in enumerate(placements)]
            return [[Detection(c, self.labels[c], s, tuple(b))
                     for b, s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist())]
                    for boxes, scores, classes in found]

    def _image_detections(self, class_logits: torch.Tensor, regression: torch.Tensor, anchors: torch.Tensor,
                          placement: Letterbox, score_threshold: float, iou_threshold: float,
                          limit: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image's first `limit` non-empty detections in image pixels: NMS goes only as far as they need."""
        boxes, scores, classes = canvas_candidates(class_logits, regression, anchors, self.input_size, score_threshold)
        image_boxes, non_empty = to_image_pixels(boxes, placement.scale_x, placement.scale_y,
                                                 placement.width, placement.height)
        keep = class_aware_nms(boxes, scores, classes, iou_threshold, limit, counted=non_empty)
        kept = keep[non_empty[keep]][:limit]
        return image_boxes[kept], scores[kept], classes[kept]

    def detect(self, images: Sequence[np.ndarray | torch.Tensor], score_threshold: float | Sequence[float] = 0.2,
               iou_threshold: float | Sequence[float] = 0.2, max_detections: int | Sequence[int] = 100,
               timings: dict[str, float] | None = None,
               full_sizes: Sequence[tuple[int, int]] | None = None) -> list[list[Detection]]:
        """Detections per image (RGB uint8 (H, W, 3) arrays or (3, H, W) tensors, e.g. decoded on the GPU, of any
        sizes), sorted by score, boxes in image pixels.

        Thresholds may be one value or one per image. `timings` receives seconds per stage.
        `full_sizes` gives each image's (width, height) before a reduced decode: boxes come back in
        those pixels and are clipped to them.
        """
        if not images:
            return []
        count = len(images)
        thresholds = _per_image(score_threshold, count, "score_threshold")
        ious = _per_image(iou_threshold, count, "iou_threshold")
        limits = _per_image(max_detections, count, "max_detections")
        clock = time.perf_counter()
        batch, placements = self.preprocess(images)
        if full_sizes is not None:
            placements = [Letterbox(width, height, p.resized_width, p.resized_height)
                          for p, (width, height) in zip(placements, full_sizes, strict=True)]
        if self.device.type == "cuda" and timings is not None:  # so that each stage's time is its own
            torch.cuda.synchronize(self.device)
        preprocessed = time.perf_counter()
        regression, class_logits, anchors = self.forward(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        network = time.perf_counter()
        results = self.postprocess(regression, class_logits, anchors, placements, thresholds, ious, limits)
        done = time.perf_counter()
        if timings is not None:
            timings["preprocess"] = timings.get("preprocess", 0.0) + preprocessed - clock
            timings["network"] = timings.get("network", 0.0) + network - preprocessed
            timings["nms"] = timings.get("nms", 0.0) + done - network
        return results
