"""Drawing detections onto an image (for the demo and the batch CLI)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

PALETTE = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


THUMBNAIL_WIDTH, SHEET_COLUMNS = 320, 5


def with_detections(image: Image.Image, detections: list[dict]) -> Image.Image:
    """The image with each detection's box and 'label score' drawn on it."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for d in detections:
        color = PALETTE[d["class_id"] % len(PALETTE)]
        x1, y1, x2, y2 = d["box"]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        draw.text((x1 + 2, max(0, y1 - 11)), f"{d['label'] or d['class_id']} {d['score']:.2f}", fill=color)
    return canvas


def draw_detections(image: Image.Image, detections: list[dict], out: str | Path) -> Path:
    """Write the image with its detections drawn on it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with_detections(image, detections).save(out)
    return out


def contact_sheet(frames: list[tuple[float, Image.Image]], out: str | Path) -> Path:
    """One PNG of a clip's sampled frames (already drawn on), as thumbnails in time order, each captioned with its
    time, for a person to look at."""
    width = THUMBNAIL_WIDTH
    thumbnails = [(time, image.resize((width, max(1, round(image.height * width / image.width)))))
                  for time, image in frames]
    height = max((thumbnail.height for _, thumbnail in thumbnails), default=1) + 14
    rows = max(1, -(-len(thumbnails) // SHEET_COLUMNS))
    sheet = Image.new("RGB", (SHEET_COLUMNS * width, rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (time, thumbnail) in enumerate(thumbnails):
        x, y = (k % SHEET_COLUMNS) * width, (k // SHEET_COLUMNS) * height
        sheet.paste(thumbnail, (x, y))
        draw.text((x + 4, y + thumbnail.height + 1), f"{time:.2f} s", fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
