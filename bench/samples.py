"""The benchmarks' images and default checkpoint, and how closely two decodes' detections agree."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image
from torchvision.ops import box_iou

from deploy.model_dir import local_checkpoint
from efficientdet import Detection

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "coffee.jpg"
FRAME_SIZES = ((1920, 1080), (3840, 2160))


def default_checkpoint(coef: int) -> str | None:
    """weights/efficientdet-d{coef}.pth, else (D0) the reference fixture beside the clone: realistic score ranges for NMS."""
    candidates = [local_checkpoint(coef)]
    if coef == 0:
        candidates.append(REPO.parent / "shared" / "fixtures" / "reference" / "efficientdet-d0.pth")
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return None


def video_frame(width: int, height: int, quality: int = 90) -> bytes:
    """The sample photograph scaled up to a video frame size, as a JPEG."""
    out = io.BytesIO()
    Image.open(SAMPLE).resize((width, height), Image.Resampling.BICUBIC).save(out, "JPEG", quality=quality)
    return out.getvalue()


def partners_found(full: list[Detection], other: list[Detection], min_score: float = 0.25) -> tuple[int, int]:
    """(how many of, out of) the first decode's detections scoring ≥ min_score have a same-class partner at
    IoU ≥ 0.5 among the other decode's."""
    wanted = [d for d in full if d.score >= min_score]
    found = 0
    for d in wanted:
        partners = [r.box for r in other if r.class_id == d.class_id]
        if partners and float(box_iou(torch.tensor([d.box]), torch.tensor(partners)).max()) >= 0.5:
            found += 1
    return found, len(wanted)
