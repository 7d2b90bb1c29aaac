"""The detection service a SageMaker handler wraps: validate, fetch and decode, detect in batches."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from efficientdet import Detector

from . import s3
from .errors import RequestError, bad_request, forbidden
from .images import DecodedImage, decode_image
from .requests import MAX_DETECTIONS_LIMIT, ImageRequest
from .responses import error_result, image_result
from .settings import Settings

log = logging.getLogger("efficientdet.serving")

UNTRAINED_WARNING = "UNTRAINED WEIGHTS: detections are meaningless (offline demo checkpoint)"


@dataclass
class Prediction:
    """Per-image results in request order, and what the log line reports."""

    results: list[dict]
    several: bool
    untrained: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    images: list[np.ndarray | None] | None = None


@dataclass
class Decoded:
    image: DecodedImage | None = None
    error: RequestError | None = None
    fetch_seconds: float = 0.0
    decode_seconds: float = 0.0


class DetectionService:
    """Holds the model and the process-wide S3 client and thread pool; safe to share between threads."""

    def __init__(self, detector: Detector, settings: Settings) -> None:
        self.detector = detector
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=settings.s3_max_concurrency, thread_name_prefix="s3-fetch")
        self.detect_pool = ThreadPoolExecutor(max_workers=settings.parallel_batches, thread_name_prefix="detect")
        self._label_ids = {label: i for i, label in enumerate(detector.labels) if label}
        self._reduce_to = detector.input_size if settings.jpeg_reduced_decode else None

    @classmethod
    def load(cls, model_dir: str | os.PathLike, settings: Settings) -> DetectionService:
        checkpoint = Path(model_dir) / settings.weights
        if not checkpoint.is_file():
            present = sorted(p.name for p in Path(model_dir).glob("*.pth"))
            raise FileNotFoundError(f"checkpoint {checkpoint} not found (EFFICIENTDET_WEIGHTS); .pth files present: {present}")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        detector = Detector.from_checkpoint(
            checkpoint, settings.compound_coef, device=device, half=settings.use_float16,
            input_size=settings.input_size, labels=settings.labels,
            anchor_scales=settings.anchor_scales, anchor_ratios=settings.anchor_ratios)
        start = time.perf_counter()
        detector.warm_up({1, settings.batch_size})
        log.info("loaded %s from %s on %s (%s, input %d), warmed up in %.2f s", detector.name, checkpoint, device,
                 detector.dtype, detector.input_size, time.perf_counter() - start)
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

    def s3_client(self):
        """The process-wide S3 client, configured by these settings."""
        settings = self.settings
        return s3.s3_client(settings.s3_connect_timeout, settings.s3_read_timeout, settings.s3_max_attempts,
                            settings.s3_max_concurrency)

    def check_allowed(self, request: ImageRequest) -> None:
        allowed = self.settings.allowed_buckets
        if request.bucket is not None and allowed and request.bucket not in allowed:
            raise forbidden(f"bucket {request.bucket!r} is not in ALLOWED_BUCKETS")

    def _load(self, request: ImageRequest) -> Decoded:
        """Fetch (S3) and decode one image; runs on the pool."""
        decoded = Decoded()
        try:
            start = time.perf_counter()
            data = request.image_bytes
            if data is None:
                data = s3.fetch_object(self.s3_client(), request.bucket, request.key, self.settings.max_image_bytes)
            fetched = time.perf_counter()
            decoded.fetch_seconds = fetched - start
            decoded.image = decode_image(data, self.settings.max_image_bytes, self.settings.max_image_pixels,
                                         request.source or "request body", self._reduce_to)
            decoded.decode_seconds = time.perf_counter() - fetched
        except RequestError as error:
            decoded.error = error
        return decoded

    def _loaded(self, pending: list[tuple[int, ImageRequest]]):
        """(index, Decoded) in request order, fetching and decoding a bounded window ahead on the pool."""
        window = 2 * max(self.settings.batch_size, self.settings.s3_max_concurrency)
        futures: deque = deque()
        for index, request in pending:
            futures.append((index, self.pool.submit(self._load, request)))
            if len(futures) >= window:
                index, future = futures.popleft()
                yield index, future.result()
        while futures:
            index, future = futures.popleft()
            yield index, future.result()

    def predict(self, requests: list[ImageRequest], several: bool, keep_images: bool = False) -> Prediction:
        """Detect in every image; a single image's error is raised, several images' errors stay in place.

        keep_images=True also returns the decoded pixels (None where an image failed); with
        JPEG_REDUCED_DECODE they may be smaller than the image its boxes refer to.
        """
        settings = self.settings
        results: list[dict | None] = [None] * len(requests)
        images: list[np.ndarray | None] = [None] * len(requests)
        options: list[tuple] = [None] * len(requests)
        pending = []
        for index, request in enumerate(requests):
            try:
                if request.error:
                    raise request.error
                self.check_allowed(request)
                classes = self.class_ids(request.classes)
            except RequestError as error:
                if not several:
                    raise
                results[index] = error_result(request.source, error)
                continue
            options[index] = (
                settings.pred_threshold if request.pred_threshold is None else request.pred_threshold,
                settings.iou_threshold if request.iou_threshold is None else request.iou_threshold,
                request.max_detections or settings.max_detections,
                classes,
            )
            pending.append((index, request))
        timings = {"s3": 0.0, "decode": 0.0}
        running: deque = deque()
        batch: list[tuple[int, DecodedImage]] = []
        for position, (index, decoded) in enumerate(self._loaded(pending)):
            timings["s3"] += decoded.fetch_seconds
            timings["decode"] += decoded.decode_seconds
            if decoded.error is not None:
                if not several:
                    raise decoded.error
                results[index] = error_result(requests[index].source, decoded.error)
            else:
                batch.append((index, decoded.image))
                if keep_images:
                    images[index] = decoded.image.pixels
            if batch and (len(batch) == settings.batch_size or position == len(pending) - 1):
                running.append(self.detect_pool.submit(self._detect, batch, requests, options, results))
                batch = []
                while len(running) > settings.parallel_batches:
                    _add_timings(timings, running.popleft().result())
        while running:
            _add_timings(timings, running.popleft().result())
        return Prediction(results, several, settings.untrained, timings, images if keep_images else None)

    def _detect(self, batch, requests, options, results) -> dict[str, float]:
        """Detect in one batch (on the detect pool), fill its results in, return its stage timings."""
        timings = {"batches": 1}
        indices = [index for index, _ in batch]
        images = [image for _, image in batch]
        thresholds = [options[i][0] for i in indices]
        ious = [options[i][1] for i in indices]
        limits = [MAX_DETECTIONS_LIMIT if options[i][3] else options[i][2] for i in indices]
        detections = self.detector.detect([image.pixels for image in images], thresholds, ious, limits,
                                          timings=timings, full_sizes=[(image.width, image.height) for image in images])
        for index, image, found in zip(indices, images, detections):
            threshold, iou, limit, classes = options[index]
            if classes is not None:
                found = [d for d in found if d.class_id in classes][:limit]
            results[index] = image_result(requests[index].source, image.width, image.height,
                                          self.detector.name, threshold, iou, found)
        return timings


def _add_timings(total: dict[str, float], part: dict[str, float]) -> None:
    for stage, value in part.items():
        total[stage] = total.get(stage, 0) + value
