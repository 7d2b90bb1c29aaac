"""The detection service a SageMaker handler wraps: validate, fetch and decode, detect in batches."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import torch

from efficientdet import Detection, Detector

from .bodies import MAX_DETECTIONS_LIMIT, ImageRequest
from .errors import RequestError, bad_request, forbidden, timed_out, too_large
from .images import DecodedImage, decode_image, decode_jpegs_on_device, jpeg_for_device
from .settings import Settings

log = logging.getLogger("efficientdet.serving")

UNTRAINED_WARNING = "UNTRAINED WEIGHTS: detections are meaningless (offline demo checkpoint)"


def warm_up_batch_sizes(batch_size: int, device: str) -> set[int]:
    """The batch sizes warmed up at load: 1 and BATCH_SIZE; on a GPU also the powers of two between, each a
    CUDA graph that a partial batch is padded up to."""
    sizes = {1, batch_size}
    if device == "cuda":
        sizes |= {2 ** k for k in range(batch_size.bit_length()) if 2 ** k < batch_size}
    return sizes


@dataclass(frozen=True)
class ResolvedRequest:
    """One image to detect in, with the service's defaults filled in and its classes as ids."""

    index: int
    request: ImageRequest
    pred_threshold: float
    iou_threshold: float
    max_detections: int
    class_ids: frozenset[int] | None


@dataclass(frozen=True)
class ImageResult:
    """The detections in one image; width and height are the full image's."""

    source: str | None
    width: int
    height: int
    pred_threshold: float
    iou_threshold: float
    detections: list[Detection]


@dataclass(frozen=True)
class ImageFailure:
    """Why one image has no detections."""

    source: str | None
    error: RequestError


@dataclass
class Prediction:
    """Per-image outcomes in request order, and what the log line reports."""

    results: list[ImageResult | ImageFailure]
    several: bool
    model: str
    untrained: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    batches: int = 0

    def request_error(self) -> RequestError | None:
        """The error the whole request answers with: a single image's, or the first entry's when no
        image of several could be detected; None when the request answers 200."""
        if all(isinstance(r, ImageFailure) for r in self.results):
            return self.results[0].error
        return None


@dataclass
class Decoded:
    image: DecodedImage | None = None
    error: RequestError | None = None
    fetch_seconds: float = 0.0
    decode_seconds: float = 0.0


class DetectionService:
    """Holds the model, its S3 client and thread pools; safe to share between threads."""

    def __init__(self, detector: Detector, settings: Settings) -> None:
        self.detector = detector
        self.settings = settings
        self._s3_client = None
        self._s3_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=settings.s3_max_concurrency, thread_name_prefix="s3-fetch")
        self.detect_pool = ThreadPoolExecutor(max_workers=settings.parallel_batches, thread_name_prefix="detect")
        self._label_ids = {label: i for i, label in enumerate(detector.labels) if label}
        self._reduce_to = detector.input_size if settings.jpeg_reduced_decode else None
        on_gpu = detector.device.type == "cuda"
        self.device_jpeg_decode = not settings.jpeg_reduced_decode and (
            on_gpu if settings.device_jpeg_decode is None else settings.device_jpeg_decode)

    @classmethod
    def load(cls, model_dir: str | os.PathLike, settings: Settings) -> DetectionService:
        """The service for a model dir, with torch's thread count set to the settings' (per process)."""
        checkpoint = Path(model_dir) / settings.weights
        if not checkpoint.is_file():
            present = sorted(p.name for p in Path(model_dir).glob("*.pth"))
            raise FileNotFoundError(f"checkpoint {checkpoint} not found (EFFICIENTDET_WEIGHTS); .pth files present: {present}")
        torch.set_num_threads(settings.num_threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        detector = Detector.from_checkpoint(
            checkpoint, settings.compound_coef, device=device, half=settings.use_float16,
            input_size=settings.input_size, labels=settings.labels,
            anchor_scales=settings.anchor_scales, anchor_ratios=settings.anchor_ratios,
            cuda_graphs=settings.cuda_graphs)
        start = time.perf_counter()
        detector.warm_up(warm_up_batch_sizes(settings.batch_size, device))
        log.info("loaded %s from %s on %s (%s, input %d, %d torch threads), warmed up in %.2f s", detector.name,
                 checkpoint, device, detector.dtype, detector.input_size, settings.num_threads,
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

    @property
    def s3(self):
        """The service's S3 client, made at the first S3 read (so that a server that never reads S3 never
        looks for AWS credentials)."""
        from . import s3  # boto3 is imported at the first S3 read: bodies with inline images never need it

        with self._s3_lock:
            if self._s3_client is None:
                settings = self.settings
                self._s3_client = s3.make_client(settings.s3_connect_timeout, settings.s3_read_timeout,
                                                 settings.s3_max_attempts, settings.s3_max_concurrency)
            return self._s3_client

    def check_allowed(self, request: ImageRequest) -> None:
        allowed = self.settings.allowed_buckets
        if request.bucket is not None and allowed and request.bucket not in allowed:
            raise forbidden(f"bucket {request.bucket!r} is not in ALLOWED_BUCKETS")

    def resolve(self, index: int, request: ImageRequest) -> ResolvedRequest:
        """The request with defaults filled in; RequestError when it cannot be served."""
        if request.error:
            raise request.error
        self.check_allowed(request)
        settings = self.settings
        return ResolvedRequest(
            index, request,
            settings.pred_threshold if request.pred_threshold is None else request.pred_threshold,
            settings.iou_threshold if request.iou_threshold is None else request.iou_threshold,
            request.max_detections or settings.max_detections,
            self.class_ids(request.classes))

    def check_response_size(self, requests: list[ImageRequest]) -> None:
        """Bound one request's whole response, not only each image: 413 before anything is fetched."""
        most = sum(r.max_detections or self.settings.max_detections for r in requests if r.error is None)
        limit = self.settings.max_detections_per_request
        if most > limit:
            raise too_large(f"this request may return up to {most} detections ({len(requests)} images × their "
                            f"max_detections); the limit is MAX_DETECTIONS_PER_REQUEST={limit}: lower max_detections "
                            "or send fewer images per request")

    def image_bytes(self, request: ImageRequest) -> bytes:
        """The request's image: its inline bytes or the S3 object (RequestError when S3 cannot give it)."""
        if request.image_bytes is not None:
            return request.image_bytes
        from . import s3

        return s3.fetch_object(self.s3, request.bucket, request.key, self.settings.max_image_bytes)

    def _load(self, request: ImageRequest) -> Decoded:
        """Fetch (S3) and decode one image; runs on the pool."""
        decoded = Decoded()
        try:
            start = time.perf_counter()
            data = self.image_bytes(request)
            fetched = time.perf_counter()
            decoded.fetch_seconds = fetched - start
            source = request.source or "request body"
            if self.device_jpeg_decode:  # only the header here: the batch's JPEGs are decoded together on the device
                decoded.image = jpeg_for_device(data, self.settings.max_image_bytes, self.settings.max_image_pixels,
                                                source)
            if decoded.image is None:
                decoded.image = decode_image(data, self.settings.max_image_bytes, self.settings.max_image_pixels,
                                             source, self._reduce_to)
            decoded.decode_seconds = time.perf_counter() - fetched
        except RequestError as error:
            decoded.error = error
        return decoded

    def _loaded(self, pending: list[ResolvedRequest], deadline: float,
                images_per_pass: int) -> Iterator[tuple[ResolvedRequest, Decoded]]:
        """Each request with its image in request order, fetched and decoded a bounded window ahead on
        the pool; what is not ready by the deadline is a 504 (and, if not started yet, never started)."""
        window = 2 * max(images_per_pass, self.settings.s3_max_concurrency)
        futures: deque[tuple[ResolvedRequest, Future]] = deque()

        def next_ready() -> tuple[ResolvedRequest, Decoded]:
            resolved, future = futures.popleft()
            try:
                return resolved, future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                future.cancel()
                return resolved, Decoded(error=self._late(resolved, "read and decoded"))

        for resolved in pending:
            futures.append((resolved, self.pool.submit(self._load, resolved.request)))
            if len(futures) >= window:
                yield next_ready()
        while futures:
            yield next_ready()

    def _late(self, resolved: ResolvedRequest, what: str) -> RequestError:
        source = resolved.request.source or "the image"
        return timed_out(f"{source} was not {what} within REQUEST_TIMEOUT={self.settings.request_timeout:g} s")

    def predict(self, requests: list[ImageRequest], several: bool, images_per_pass: int | None = None) -> Prediction:
        """Detect in every image; each image's error stays in its place (Prediction.request_error says
        what a request answers). Images not done within REQUEST_TIMEOUT get a 504 in their place.

        `images_per_pass` images go through the network at once (default BATCH_SIZE).
        """
        deadline = time.monotonic() + self.settings.request_timeout
        images_per_pass = images_per_pass or self.settings.batch_size
        results: list[ImageResult | ImageFailure | None] = [None] * len(requests)
        pending = []
        for index, request in enumerate(requests):
            try:
                pending.append(self.resolve(index, request))
            except RequestError as error:
                results[index] = ImageFailure(request.source, error)
        timings = {"s3": 0.0, "decode": 0.0}
        running: deque[Future] = deque()
        batch: list[tuple[ResolvedRequest, DecodedImage]] = []
        batches = 0

        def run(batch: list[tuple[ResolvedRequest, DecodedImage]], last: bool) -> None:
            """The request's last batch runs on the calling thread (the one that warmed the model up: its
            OpenMP threads are ready, measured 1.4× faster per D0 image on CPU than a pool thread's); earlier
            batches go to the detect pool, up to PARALLEL_BATCHES at once. JPEGs left for the device decoder
            are decoded here first, while the pool still runs the previous batch."""
            nonlocal batches
            if time.monotonic() > deadline:
                for resolved, _ in batch:
                    results[resolved.index] = ImageFailure(resolved.request.source, self._late(resolved, "detected"))
                return
            batch = self._decode_on_device(batch, results, timings)
            if not batch:
                return
            batches += 1
            if last:
                _add_timings(timings, self._detect(batch, results))
                return
            running.append(self.detect_pool.submit(self._detect, batch, results))
            while len(running) > self.settings.parallel_batches:
                _add_timings(timings, running.popleft().result())

        for done, (resolved, decoded) in enumerate(self._loaded(pending, deadline, images_per_pass), 1):
            timings["s3"] += decoded.fetch_seconds
            timings["decode"] += decoded.decode_seconds
            if decoded.error is None:
                batch.append((resolved, decoded.image))
            else:
                results[resolved.index] = ImageFailure(resolved.request.source, decoded.error)
            if batch and (len(batch) == images_per_pass or done == len(pending)):
                run(batch, last=done == len(pending))
                batch = []
        while running:
            _add_timings(timings, running.popleft().result())
        return Prediction(results, several, self.detector.name, self.settings.untrained, timings, batches)

    def _decode_on_device(self, batch: list[tuple[ResolvedRequest, DecodedImage]],
                          results: list[ImageResult | ImageFailure | None],
                          timings: dict[str, float]) -> list[tuple[ResolvedRequest, DecodedImage]]:
        """The batch with its JPEGs left for the device decoder decoded there, in one call; what that decoder
        refuses is decoded on the CPU, and an image neither can decode fails in its place."""
        waiting = [i for i, (_, image) in enumerate(batch) if image.pixels is None]
        if not waiting:
            return batch
        start = time.perf_counter()
        decoded = decode_jpegs_on_device([batch[i][1] for i in waiting], self.detector.device)
        ready = list(batch)
        for i, pixels in zip(waiting, decoded):
            resolved, image = batch[i]
            try:
                ready[i] = (resolved, image._replace(pixels=pixels, jpeg=None) if pixels is not None else
                            decode_image(image.jpeg, self.settings.max_image_bytes, self.settings.max_image_pixels,
                                         resolved.request.source or "request body"))
            except RequestError as error:
                results[resolved.index] = ImageFailure(resolved.request.source, error)
                ready[i] = None
        timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - start
        return [item for item in ready if item is not None]

    def _detect(self, batch: list[tuple[ResolvedRequest, DecodedImage]],
                results: list[ImageResult | ImageFailure | None]) -> dict[str, float]:
        """Detect in one batch (on the detect pool or the caller), fill its results in, return its stage timings."""
        timings: dict[str, float] = {}
        requests = [resolved for resolved, _ in batch]
        images = [image for _, image in batch]
        limits = [MAX_DETECTIONS_LIMIT if r.class_ids is not None else r.max_detections for r in requests]
        detections = self.detector.detect(
            [image.pixels for image in images], [r.pred_threshold for r in requests],
            [r.iou_threshold for r in requests], limits, timings=timings,
            full_sizes=[(image.width, image.height) for image in images])
        for resolved, image, found in zip(requests, images, detections):
            if resolved.class_ids is not None:
                found = [d for d in found if d.class_id in resolved.class_ids][:resolved.max_detections]
            results[resolved.index] = ImageResult(resolved.request.source, image.width, image.height,
                                                  resolved.pred_threshold, resolved.iou_threshold, found)
        return timings


def log_prediction(prediction: Prediction, status: int) -> None:
    """The request's log line: status, images, forward passes, per-image errors, milliseconds per stage."""
    errors = [r.error.status_code for r in prediction.results if isinstance(r, ImageFailure)]
    log.info("detected status=%d images=%d batches=%d errors=%s timings_ms=%s%s", status, len(prediction.results),
             prediction.batches, errors,
             json.dumps({stage: round(seconds * 1000, 2) for stage, seconds in prediction.timings.items()}),
             f" {UNTRAINED_WARNING}" if prediction.untrained else "")


def _add_timings(total: dict[str, float], part: dict[str, float]) -> None:
    for stage, value in part.items():
        total[stage] = total.get(stage, 0) + value
