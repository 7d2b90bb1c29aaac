"""The benchmarks' images and default checkpoint, and how closely two decodes' detections agree."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

from deploy.model_dir import local_checkpoint
from efficientdet import Detection
from samples.photos import natural_photo

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "coffee.jpg"
FRAME_SIZES = ((1920, 1080), (3840, 2160))
# the reference fixtures: beside the clone, or where EFFICIENTDET_REFERENCE says (as for the tests)
REFERENCE = Path(os.environ.get("EFFICIENTDET_REFERENCE", REPO.parent / "shared" / "fixtures" / "reference"))
FOUND_SCORE, FOUND_IOU = 0.01, 0.95


def default_checkpoint(coef: int) -> str | None:
    """weights/efficientdet-d{coef}.pth, else (D0) the reference fixture: realistic score ranges for NMS."""
    candidates = [local_checkpoint(coef)]
    if coef == 0:
        candidates.append(REFERENCE / "efficientdet-d0.pth")
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return None


def video_frame(width: int, height: int, quality: int = 90) -> bytes:
    """The sample photograph scaled up to a video frame size, as a JPEG."""
    out = io.BytesIO()
    Image.open(SAMPLE).resize((width, height), Image.Resampling.BICUBIC).save(out, "JPEG", quality=quality)
    return out.getvalue()


def partner_score_changes(expected: list[Detection], actual: list[Detection], min_iou: float) -> list[float | None]:
    """Per detection of `expected`, the smallest score change to a same-class detection of `actual` at IoU ≥ min_iou
    (None where there is none)."""
    changes: list[float | None] = []
    for detection in expected:
        partners = [d for d in actual if d.class_id == detection.class_id]
        ious: list[float] = []
        if partners:
            ious = box_iou(torch.tensor([detection.box]), torch.tensor([d.box for d in partners]))[0].tolist()
        scores = [abs(d.score - detection.score) for d, iou in zip(partners, ious) if iou >= min_iou]
        changes.append(min(scores) if scores else None)
    return changes


def partners_found(full: list[Detection], other: list[Detection], min_score: float = 0.25) -> tuple[int, int]:
    """(how many of, out of) the first decode's detections scoring ≥ min_score have a same-class partner at
    IoU ≥ 0.5 among the other decode's."""
    wanted = [d for d in full if d.score >= min_score]
    return sum(change is not None for change in partner_score_changes(wanted, other, 0.5)), len(wanted)


def found_again(expected: list[Detection], actual: list[Detection]) -> dict:
    """How many of `expected` have a same-class partner in `actual` at IoU ≥ 0.95 and score within 0.01, and the
    largest score change over the partners at IoU ≥ 0.95."""
    changes = [c for c in partner_score_changes(expected, actual, FOUND_IOU) if c is not None]
    return {"found": sum(c <= FOUND_SCORE for c in changes), "of": len(expected),
            "largest_score_change": max(changes, default=0.0)}


def fidelity_images(image: np.ndarray) -> dict[str, np.ndarray]:
    """The images a reduced precision's detections are compared on: `image` and two generated photographs."""
    return {"sample photo": image, "generated 512×512 photo": natural_photo(512, 512, seed=1),
            "generated 1280×720 photo": natural_photo(1280, 720, seed=0)}
