"""`python -m detect INPUT… [--out FILE] [--resume] [--draw DIR] [--sample-fps N …]`: detections as JSON lines,
with progress.

INPUT is an image or video file, a folder (searched recursively), s3://bucket/prefix/ or a manifest file
(one such input a line). Each image or video gives one JSON line in the endpoint's schema, errors in place; a
video's line holds its sampled frames. Exit status: 0 when every image and frame was detected, 1 when any
failed, 2 for bad arguments, 130 when interrupted (what was written stays; --resume continues).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from deploy.model_dir import local_checkpoint
from detect.draw import contact_sheet, draw_detections, with_detections
from efficientdet.untrained import write_untrained_checkpoint
from request_handling.bodies import EntryRequest, option_fields
from request_handling.errors import RequestError
from request_handling.formats import entry as result_entry
from request_handling.images import decode_image
from request_handling.results import ClipResult, EntryFailure, ImageResult
from request_handling.service import DetectionService
from request_handling.settings import ConfigurationError, load_settings
from request_handling.video import Video

from .sources import expand


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


def frame_name(index: int, time: float) -> str:
    """A sampled frame's picture, named as the users' sampling job names its frames: 000216-9.0090.png."""
    return f"{index:06d}-{time:.4f}.png"


def load_service(args) -> DetectionService:
    weights = args.weights or local_checkpoint(args.coef)
    if not weights.is_file():
        if not args.untrained:
            raise SystemExit(f"no checkpoint at {weights}: pass --weights, run `make weights COEF={args.coef}`, "
                             "or --untrained for meaningless offline detections")
        weights = write_untrained_checkpoint(args.coef, Path(tempfile.mkdtemp(prefix="detect-")) / weights.name)
    env = dict(os.environ, EFFICIENTDET_WEIGHTS=weights.name, EFFICIENTDET_COMPOUND_COEF=str(args.coef))
    env.setdefault("REQUEST_TIMEOUT", "86400")  # a long clip takes what it takes: no endpoint's 60 s here
    if args.pred_threshold is not None:
        env["DEFAULT_PRED_THRESHOLD"] = str(args.pred_threshold)
    if args.iou_threshold is not None:
        env["DEFAULT_IOU_THRESHOLD"] = str(args.iou_threshold)
    try:
        settings = load_settings(weights.parent, env)
    except ConfigurationError as error:
        raise SystemExit(str(error)) from None
    return DetectionService.load(weights.parent, settings)


def detection_dicts(result: ImageResult) -> list[dict]:
    return [{"label": d.label, "class_id": d.class_id, "score": d.score, "box": list(d.box)} for d in result.detections]


def draw(service: DetectionService, request: EntryRequest, result: ImageResult | ClipResult, out: Path) -> None:
    """The image at full size with its boxes as `out`; a clip's sampled frames with theirs in the folder `out`,
    and its contact sheet as `out` (read again: drawing is for looking, not for speed)."""
    settings = service.settings
    try:
        media = service.media.fetch(request, request.source or "request body")
        if not isinstance(media, bytes):
            frames = {(f.index, f.time): {"detections": detection_dicts(f.outcome)} for f in result.frames
                      if isinstance(f.outcome, ImageResult)}
            sheet = []
            clip = Video(media, request.source or "video", settings.max_image_pixels)
            for sampled in clip.frames(service.resolve(0, request).sampling):
                found = frames.get((sampled.index, sampled.time))
                if found is not None and sampled.pixels is not None:
                    drawn = with_detections(Image.fromarray(sampled.pixels), found["detections"])
                    folder = out.with_suffix("")
                    folder.mkdir(parents=True, exist_ok=True)
                    drawn.save(folder / frame_name(sampled.index, sampled.time))
                    sheet.append((sampled.time, drawn))
            contact_sheet(sheet, out)  # the clip's picture: its frames at a glance
            return
        image = decode_image(media, settings.max_image_bytes, settings.max_image_pixels)
    except RequestError as error:
        print(f"could not draw {request.source}: {error.message}", file=sys.stderr)
        return
    draw_detections(Image.fromarray(image.pixels), detection_dicts(result), out)


def sampling_options(args) -> dict[str, object]:
    """The sampling options given on the command line, checked as a request's are."""
    given = {"sample_fps": args.sample_fps, "every_n_frames": args.every_n_frames, "start": args.start,
             "end": args.end, "max_frames": args.max_frames, "keyframes": args.keyframes or None,
             "aggregate": args.aggregate,
             "timestamps": [timestamp_seconds(t) for t in args.timestamps.split(",")] if args.timestamps else None}
    return option_fields({name: value for name, value in given.items() if value is not None})


def timestamp_seconds(text: str) -> float:
    """One of --timestamps' values; ValueError naming it where it is no number."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--timestamps: {text.strip()!r} is not a number of seconds") from None


def writable_outputs(args) -> None:
    """--out's file and --draw's folder made before any work (neither is emptied): OSError where they cannot be."""
    if args.out != "-":
        with open(args.out, "a"):
            pass
    if args.draw is not None:
        args.draw.mkdir(parents=True, exist_ok=True)


def progress_units(result) -> int:
    """What the progress bar counts: an image is one, a video its sampled frames."""
    return len(result.frames) if isinstance(result, ClipResult) else 1


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
    videos = parser.add_argument_group("videos", "which frames of each video are detected (default: one a second)")
    videos.add_argument("--sample-fps", type=float, help="frames per second of video time")
    videos.add_argument("--every-n-frames", type=int, help="every n-th frame instead")
    videos.add_argument("--timestamps", help="these times instead, in seconds, comma-separated: 1.5,3,7.25")
    videos.add_argument("--keyframes", action="store_true", help="the keyframes only instead (the cheapest)")
    videos.add_argument("--start", type=float, help="from this time (s)")
    videos.add_argument("--end", type=float, help="to this time (s)")
    videos.add_argument("--max-frames", type=int, help="at most this many frames per video")
    videos.add_argument("--aggregate", choices=("frames", "segments", "both"),
                        help="each clip's line: its frames (default), each label's segments and summary, or both")
    args = parser.parse_args(argv)
    if args.resume and args.out == "-":
        parser.error("--resume needs --out FILE")
    try:
        sampling = sampling_options(args)
    except (RequestError, ValueError) as error:
        parser.error(getattr(error, "message", str(error)))
    try:
        writable_outputs(args)
    except OSError as error:
        parser.error(f"{error.filename}: {error.strerror}")

    service = load_service(args)
    skip = done_sources(Path(args.out)) if args.resume else set()
    try:
        requests = [dataclasses.replace(r, **sampling) if r.error is None else r
                    for r in expand(args.inputs, service.media.s3, service.check_allowed) if r.source not in skip]
    except RequestError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = sys.stdout if args.out == "-" else open(args.out, "a" if args.resume else "w")  # noqa: SIM115
    counts = {"images": 0, "videos": 0, "frames": 0, "detections": 0, "failures": 0}
    start = time.perf_counter()
    progress = tqdm(unit="frame", file=sys.stderr, dynamic_ncols=True)
    status = 0
    try:
        for first in range(0, len(requests), args.chunk):
            chunk = requests[first:first + args.chunk]
            prediction = service.predict(chunk, several=True)
            for offset, (request, result) in enumerate(zip(chunk, prediction.results)):
                entry = result_entry(result, prediction.model)
                out.write(json.dumps(entry) + "\n")
                progress.update(progress_units(result))
                if isinstance(result, EntryFailure):  # an image or a clip: what failed may not have been read
                    counts["failures"] += 1
                    continue
                if isinstance(result, ClipResult):
                    counts["videos"] += 1
                    counts["frames"] += len(result.frames)
                    found = [f.outcome for f in result.frames]
                    counts["failures"] += sum(isinstance(o, EntryFailure) for o in found) + (result.error is not None)
                    counts["detections"] += sum(len(o.detections) for o in found if not isinstance(o, EntryFailure))
                else:
                    counts["images"] += 1
                    counts["detections"] += len(result.detections)
                if args.draw is not None:
                    draw(service, request, result, args.draw / picture_name(result.source, first + offset))
            out.flush()
    except KeyboardInterrupt:
        status = 130
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    elapsed = time.perf_counter() - start
    pictures = counts["images"] + counts["frames"]
    summary = dict(counts, skipped=len(skip), seconds=round(elapsed, 2),
                   images_per_s=round(pictures / elapsed, 2) if elapsed else 0.0)
    print(json.dumps(summary), file=sys.stderr)
    if status:
        return status
    return 1 if counts["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
