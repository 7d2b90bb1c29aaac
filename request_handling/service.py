"""The detection service a server wraps: the model and its pools, the request rules (defaults, allowed buckets,
classes, the response's size), and a request's run through `request_handling.pipeline`'s stages, with
`request_handling.media` fetching and decoding."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

from efficientdet import Detector

from .bodies import MAX_DETECTIONS_LIMIT, EntryRequest
from .errors import bad_request, forbidden, too_large
from .media import MediaLoader
from .pipeline import BatchRunner, Frame, ResolvedRequest, batched, expand, gather, load_ahead
from .placement import Placement, serving_device, warm_up_batch_sizes
from .responses import UNTRAINED_WARNING
from .results import ImageResult, Prediction
from .settings import Settings
from .video import Sampling

log = logging.getLogger("efficientdet.serving")


class DetectionService:
    """Holds the model, its media loader and thread pools; safe to share between threads."""

    def __init__(self, detector: Detector, settings: Settings) -> None:
        self.detector = detector
        self.settings = settings
        self.placement = Placement.of(settings, str(detector.device))
        self.media = MediaLoader(settings, self.placement)
        self.fetch_pool = ThreadPoolExecutor(max_workers=settings.s3_max_concurrency, thread_name_prefix="fetch")
        self.detect_pool = ThreadPoolExecutor(max_workers=settings.parallel_batches, thread_name_prefix="detect")
        self._label_ids = {label: i for i, label in enumerate(detector.labels) if label}

    @classmethod
    def load(cls, model_dir: str | os.PathLike, settings: Settings, gpu_id: int | None = None) -> DetectionService:
        """The service for a model dir, on `serving_device(gpu_id)`, with torch's thread count set to the settings'
        (per process)."""
        checkpoint = Path(model_dir) / settings.weights
        if not checkpoint.is_file():
            present = sorted(p.name for p in Path(model_dir).glob("*.pth"))
            raise FileNotFoundError(f"checkpoint {checkpoint} not found (EFFICIENTDET_WEIGHTS); .pth files present: {present}")
        torch.set_num_threads(settings.num_threads)
        placement = Placement.of(settings, serving_device(gpu_id))
        if gpu_id is not None and placement.device != "cpu":
            torch.cuda.set_device(placement.device)  # the worker's own GPU current on its thread, as TorchServe's handlers do
        placement.warn_about_ignored(settings)
        detector = Detector.from_checkpoint(
            checkpoint, settings.compound_coef, device=placement.device, half=placement.float16,
            bfloat16=placement.bfloat16, input_size=settings.input_size, labels=settings.labels,
            anchor_scales=settings.anchor_scales, anchor_ratios=settings.anchor_ratios,
            cuda_graphs=placement.cuda_graphs, onednn_graph=settings.onednn_graph)
        start = time.perf_counter()
        detector.warm_up(warm_up_batch_sizes(settings.batch_size, placement.device))
        log.info("loaded %s from %s on %s (%s, input %d, %d torch threads), warmed up in %.2f s", detector.name,
                 checkpoint, placement.device, detector.dtype, detector.input_size, settings.num_threads,
                 time.perf_counter() - start)
        if settings.untrained:
            log.warning(UNTRAINED_WARNING)
        return cls(detector, settings)

    def class_ids(self, classes: tuple[str | int, ...] | None) -> frozenset[int] | None:
        if classes is None:
            return None
        ids = set()
        for c in classes:
            if isinstance(c, int):
                if not 0 <= c < self.detector.num_classes:
                    raise bad_request(f"class id {c} is out of range 0-{self.detector.num_classes - 1}")
                ids.add(c)
            elif c in self._label_ids:
                ids.add(self._label_ids[c])
            else:
                raise bad_request(f"unknown class name {c[:60]!r}")
        return frozenset(ids)

    def check_allowed(self, request: EntryRequest) -> None:
        allowed = self.settings.allowed_buckets
        if request.bucket is not None and allowed and request.bucket not in allowed:
            raise forbidden(f"bucket {request.bucket!r} is not in ALLOWED_BUCKETS")

    def resolve(self, entry: int, request: EntryRequest) -> ResolvedRequest:
        """The request with defaults filled in; RequestError when it cannot be served."""
        if request.error:
            raise request.error
        self.check_allowed(request)
        settings = self.settings
        return ResolvedRequest(
            entry, request,
            settings.pred_threshold if request.pred_threshold is None else request.pred_threshold,
            settings.iou_threshold if request.iou_threshold is None else request.iou_threshold,
            request.max_detections or settings.max_detections,
            self.class_ids(request.classes),
            Sampling.of(request.sample_fps, request.every_n_frames, request.timestamps, request.start, request.end,
                        request.max_frames, settings.max_video_frames, request.keyframes))

    def check_response_size(self, requests: list[EntryRequest]) -> None:
        """Bound one request's whole response, not only each entry: 413 before anything is fetched."""
        most = sum(r.max_detections or self.settings.max_detections for r in requests if r.error is None)
        limit = self.settings.max_detections_per_request
        if most > limit:
            raise too_large(f"this request may return up to {most} detections ({len(requests)} images × their "
                            f"max_detections); the limit is MAX_DETECTIONS_PER_REQUEST={limit}: lower max_detections "
                            "or send fewer images per request")

    def predict(self, requests: list[EntryRequest], *, several: bool,
                images_per_pass: int | None = None) -> Prediction:
        """Detect in every entry; each entry's error stays in its place (Prediction.request_error says what a
        request answers). Frames not done within REQUEST_TIMEOUT get a 504 in their place.

        `several`: the body listed several entries (the answer is a list). `images_per_pass` images go through the
        network at once (default BATCH_SIZE).
        """
        settings = self.settings
        deadline = time.monotonic() + settings.request_timeout
        images_per_pass = images_per_pass or settings.batch_size
        runner = BatchRunner(self.media.decode_on_device, self.detect_frames, self.detect_pool,
                             settings.parallel_batches, deadline, settings.request_timeout)
        frames = load_ahead(expand(requests, self.resolve), self.media.load, self.fetch_pool,
                            2 * max(images_per_pass, settings.s3_max_concurrency), deadline, settings.request_timeout)
        done = list(runner.run(batched(frames, images_per_pass)))
        timings = {"s3": sum(f.fetch_seconds for f in done), "decode": sum(f.decode_seconds for f in done)}
        for stage, seconds in runner.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        return Prediction(gather(done, len(requests)), several, self.detector.name, settings.untrained, timings,
                          runner.batches)

    def detect_frames(self, frames: list[Frame]) -> tuple[list[Frame], dict[str, float]]:
        """One batch's frames with their outcomes, and its stage timings; on the detect pool or the caller."""
        timings: dict[str, float] = {}
        requests = [frame.request for frame in frames]
        images = [frame.image for frame in frames]
        limits = [MAX_DETECTIONS_LIMIT if r.class_ids is not None else r.max_detections for r in requests]
        detections = self.detector.detect(
            [image.pixels for image in images], [r.pred_threshold for r in requests],
            [r.iou_threshold for r in requests], limits, timings=timings,
            full_sizes=[(image.width, image.height) for image in images])
        detected = []
        for frame, resolved, image, found in zip(frames, requests, images, detections):
            if resolved.class_ids is not None:
                found = [d for d in found if d.class_id in resolved.class_ids][:resolved.max_detections]
            detected.append(replace(frame, image=None, outcome=ImageResult(frame.source, image.width, image.height,
                                                               resolved.pred_threshold, resolved.iou_threshold, found)))
        return detected, timings
