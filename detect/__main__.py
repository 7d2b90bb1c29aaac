"""`python -m detect INPUT… [--out FILE] [--resume] [--draw DIR]`: detections as JSON lines, with progress.

INPUT is an image file, a folder (searched recursively), s3://bucket/prefix/ or a manifest file
(one such input a line). Each image gives one JSON line in the endpoint's schema, errors in place.
Exit status: 0 when every image was detected, 1 when any failed, 2 for bad arguments, 130 when
interrupted (what was written stays; --resume continues).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from deploy.model_dir import local_checkpoint
from detect.draw import draw_detections
from efficientdet.untrained import write_untrained_checkpoint
from request_handling.bodies import ImageRequest
from request_handling.errors import RequestError
from request_handling.formats import entry as result_entry
from request_handling.images import decode_image
from request_handling.service import DetectionService, ImageFailure
from request_handling.settings import ConfigurationError, load_settings

from .sources import expand, with_bytes


def done_sources(out: Path) -> set[str]:
    """Sources already answered in an earlier run's output (a torn last line is ignored)."""
    if not out.is_file():
        return set()
    done = set()
    for line in out.read_text().splitlines():
        try:
            done.add(json.loads(line)["source"])
        except (ValueError, KeyError, TypeError):
            continue
    return done


def picture_name(source: str, index: int) -> str:
    return f"{index:06d}-{Path(source).stem}.png"


def load_service(args) -> DetectionService:
    weights = args.weights or local_checkpoint(args.coef)
    if not weights.is_file():
        if not args.untrained:
            raise SystemExit(f"no checkpoint at {weights}: pass --weights, run `make weights COEF={args.coef}`, "
                             "or --untrained for meaningless offline detections")
        weights = write_untrained_checkpoint(args.coef, Path(tempfile.mkdtemp(prefix="detect-")) / weights.name)
    env = dict(os.environ, EFFICIENTDET_WEIGHTS=weights.name, EFFICIENTDET_COMPOUND_COEF=str(args.coef))
    if args.pred_threshold is not None:
        env["DEFAULT_PRED_THRESHOLD"] = str(args.pred_threshold)
    if args.iou_threshold is not None:
        env["DEFAULT_IOU_THRESHOLD"] = str(args.iou_threshold)
    try:
        settings = load_settings(weights.parent, env)
    except ConfigurationError as error:
        raise SystemExit(str(error)) from None
    return DetectionService.load(weights.parent, settings)


def draw(service: DetectionService, request: ImageRequest, detections: list[dict], out: Path) -> None:
    """The image at full size (read again: drawing is for looking, not for speed) with its boxes."""
    settings = service.settings
    try:
        image = decode_image(service.image_bytes(request), settings.max_image_bytes, settings.max_image_pixels)
    except RequestError as error:
        print(f"could not draw {request.source}: {error.message}", file=sys.stderr)
        return
    draw_detections(Image.fromarray(image.pixels), detections, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detect", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    parser.add_argument("--out", default="-", help="JSON Lines output file (default stdout)")
    parser.add_argument("--resume", action="store_true", help="skip inputs already in --out, append the rest")
    parser.add_argument("--draw", type=Path, help="write each image with its boxes as PNG into this folder")
    parser.add_argument("--coef", type=int, choices=range(9), default=0)
    parser.add_argument("--weights", type=Path, help="checkpoint (default weights/efficientdet-d{N}.pth)")
    parser.add_argument("--untrained", action="store_true", help="without a checkpoint, use UNTRAINED weights")
    parser.add_argument("--pred-threshold", type=float)
    parser.add_argument("--iou-threshold", type=float)
    parser.add_argument("--chunk", type=int, default=16, help="images handed to the service at a time")
    args = parser.parse_args(argv)
    if args.resume and args.out == "-":
        parser.error("--resume needs --out FILE")

    service = load_service(args)
    skip = done_sources(Path(args.out)) if args.resume else set()
    try:
        requests = [r for r in expand(args.inputs, service.s3, service.check_allowed) if r.source not in skip]
    except RequestError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = sys.stdout if args.out == "-" else open(args.out, "a" if args.resume else "w")  # noqa: SIM115
    counts = {"images": 0, "detections": 0, "failures": 0}
    start = time.perf_counter()
    progress = tqdm(total=len(requests), unit="img", file=sys.stderr, dynamic_ncols=True)
    status = 0
    try:
        for first in range(0, len(requests), args.chunk):
            chunk = [with_bytes(r) for r in requests[first:first + args.chunk]]
            prediction = service.predict(chunk, several=True)
            for offset, (request, result) in enumerate(zip(chunk, prediction.results)):
                entry = result_entry(result, prediction.model)
                out.write(json.dumps(entry) + "\n")
                counts["images"] += 1
                if isinstance(result, ImageFailure):
                    counts["failures"] += 1
                    continue
                counts["detections"] += len(result.detections)
                if args.draw is not None:
                    draw(service, request, entry["detections"], args.draw / picture_name(result.source, first + offset))
            out.flush()
            progress.update(len(chunk))
    except KeyboardInterrupt:
        status = 130
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    elapsed = time.perf_counter() - start
    summary = dict(counts, skipped=len(skip), seconds=round(elapsed, 2),
                   images_per_s=round(counts["images"] / elapsed, 2) if elapsed else 0.0)
    print(json.dumps(summary), file=sys.stderr)
    if status:
        return status
    return 1 if counts["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
