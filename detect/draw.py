"""Drawing detections onto an image (for the demo and the batch CLI)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


def draw_detections(image: Image.Image, detections: list[dict], out: str | Path) -> Path:
    """Write the image with each detection's box and 'label score' drawn on it."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for d in detections:
        color = PALETTE[d["class_id"] % len(PALETTE)]
        x1, y1, x2, y2 = d["box"]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        draw.text((x1 + 2, max(0, y1 - 11)), f"{d['label'] or d['class_id']} {d['score']:.2f}", fill=color)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
