"""The detection service a SageMaker handler wraps: the model, its S3 client and pools, and each pipeline stage's work
(resolve, load, decode on the device, detect) for `request_handling.pipeline` to run."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from efficientdet import Detector

from .bodies import MAX_DETECTIONS_LIMIT, ImageRequest
from .errors import RequestError, bad_request, forbidden, too_large
from .images import DecodedImage, decode_image, decode_jpegs_on_device, jpeg_for_device
from .pipeline import (
    BatchRunner,
    Frame,
    ImageFailure,
    ImageResult,
    ResolvedRequest,
    VideoResult,
    batched,
    expand,
    gather,
    load_ahead,
)
from .settings import Settings
from .video import SIGNATURE_BYTES, Sampling, Video, is_video, refuse_other_containers, spooled

log = logging.getLogger("efficientdet.serving")

UNTRAINED_WARNING = "UNTRAINED WEIGHTS: detections are meaningless (offline demo checkpoint)"


def serving_device(gpu_id: int | None = None) -> str:
    """The device a model server's worker runs its model on: the GPU the server gave it (TorchServe's `gpu_id`: on
    an instance of several GPUs it spreads its workers over them), else the current GPU, else the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return "cuda" if gpu_id is None else f"cuda:{gpu_id}"


def warm_up_batch_sizes(batch_size: int, device: str) -> set[int]:
    """The batch sizes warmed up at load: 1 and BATCH_SIZE; on a GPU also the powers of two between, each a
    CUDA graph that a partial batch is padded up to."""
    sizes = {1, batch_size}
    if torch.device(device).type == "cuda":
        sizes |= {2 ** k for k in range(batch_size.bit_length()) if 2 ** k < batch_size}
    return sizes


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
    def load(cls, model_dir: str | os.PathLike, settings: Settings, gpu_id: int | None = None) -> DetectionService:
        """The service for a model dir, on `serving_device(gpu_id)`, with torch's thread count set to the settings'
        (per process)."""
        checkpoint = Path(model_dir) / settings.weights
        if not checkpoint.is_file():
            present = sorted(p.name for p in Path(model_dir).glob("*.pth"))
            raise FileNotFoundError(f"checkpoint {checkpoint} not found (EFFICIENTDET_WEIGHTS); .pth files present: {present}")
        torch.set_num_threads(settings.num_threads)
        device = serving_device(gpu_id)
        if gpu_id is not None and device != "cpu":
            torch.cuda.set_device(device)  # the worker's own GPU current on its thread, as TorchServe's handlers do
        detector = Detector.from_checkpoint(
            checkpoint, settings.compound_coef, device=device, half=settings.use_float16,
            bfloat16=settings.cpu_bfloat16 and device == "cpu",
            input_size=settings.input_size, labels=settings.labels,
            anchor_scales=settings.anchor_scales, anchor_ratios=settings.anchor_ratios,
            cuda_graphs=settings.cuda_graphs)
        if settings.cpu_bfloat16 and device != "cpu":
            log.warning("CPU_PRECISION=bfloat16 applies on CPU only; on %s, USE_FLOAT16 sets the precision", device)
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
            self.class_ids(request.classes),
            Sampling.of(request.sample_fps, request.every_n_frames,
                        request.timestamps, request.start, request.end, request.max_frames, settings.max_video_frames))

    def check_response_size(self, requests: list[ImageRequest]) -> None:
        """Bound one request's whole response, not only each image: 413 before anything is fetched."""
        most = sum(r.max_detections or self.settings.max_detections for r in requests if r.error is None)
        limit = self.settings.max_detections_per_request
        if most > limit:
            raise too_large(f"this request may return up to {most} detections ({len(requests)} images × their "
                            f"max_detections); the limit is MAX_DETECTIONS_PER_REQUEST={limit}: lower max_detections "
                            "or send fewer images per request")

    def load_frame(self, frame: Frame) -> Frame | Iterator[Frame]:
        """Fetch (S3) and decode one entry's image, on the fetch pool; for a video (told by its bytes), open it here
        and give its sampled frames, decoded one by one as they are asked for. JPEGs for the device decoder are
        only read to their header here: the batch's are decoded together on the device (`decode_on_device`)."""
        start = time.perf_counter()
        source = frame.source or "request body"
        try:
            media = self.media(frame.request.request)
            fetched = time.perf_counter()
            if isinstance(media, Path):
                video = Video(media, source)
                return self._video_frames(replace(frame, video=video.info, fetch_seconds=fetched - start), video)
            refuse_other_containers(media[:SIGNATURE_BYTES], source)
            image = jpeg_for_device(media, self.settings.max_image_bytes, self.settings.max_image_pixels, source) \
                if self.device_jpeg_decode else None
            if image is None:
                image = decode_image(media, self.settings.max_image_bytes, self.settings.max_image_pixels, source,
                                     self._reduce_to)
        except RequestError as error:
            return replace(frame, fetch_seconds=time.perf_counter() - start).failed(error)
        return replace(frame, image=image, fetch_seconds=fetched - start, decode_seconds=time.perf_counter() - fetched)

    def media(self, request: ImageRequest) -> bytes | Path:
        """An entry's image bytes, or its video in a temporary file (an S3 clip is streamed there, never held in
        memory; inline video bytes are written there for the decoder)."""
        if request.image_bytes is not None:
            data = request.image_bytes
            if not is_video(data[:SIGNATURE_BYTES]):
                return data
            if len(data) > self.settings.max_video_bytes:
                raise too_large(f"the video is {len(data)} bytes; the limit is MAX_VIDEO_BYTES="
                                f"{self.settings.max_video_bytes}")
            return spooled(io.BytesIO(data), b"", len(data), "the video")  # BytesIO shares the bytes: no copy
        from . import s3

        return s3.fetch_media(self.s3, request.bucket, request.key, self.settings.max_image_bytes,
                              self.settings.max_video_bytes)

    @staticmethod
    def _video_frames(frame: Frame, video: Video) -> Iterator[Frame]:
        """An opened video entry's frames, each decoded when the pipeline asks for it (its decode time is the wait
        for it); the clip's file is removed when the last one is done (or the pipeline stops asking)."""
        clock, fetch_seconds = time.perf_counter(), frame.fetch_seconds  # the clip's fetch counts once, on its first frame
        sampled = None
        for sampled in video.frames(frame.request.sampling):
            at = replace(frame, index=sampled.index, time=sampled.time, fetch_seconds=fetch_seconds,
                         decode_seconds=time.perf_counter() - clock)
            if sampled.error is not None:
                yield at.failed(sampled.error)
            else:
                height, width = sampled.pixels.shape[:2]
                yield replace(at, image=DecodedImage(sampled.pixels, width, height))
            clock, fetch_seconds = time.perf_counter(), 0.0
        if sampled is None:  # the sampling picked no frame: the entry fails, saying why
            yield frame.failed(bad_request(f"{frame.source or 'the video'} has no frame in the sampled range "
                                           f"(its frames run to {video.info.duration:.3f} s)"))

    def predict(self, requests: list[ImageRequest], several: bool, images_per_pass: int | None = None) -> Prediction:
        """Detect in every image; each image's error stays in its place (Prediction.request_error says
        what a request answers). Images not done within REQUEST_TIMEOUT get a 504 in their place.

        `images_per_pass` images go through the network at once (default BATCH_SIZE). The stages are
        `request_handling.pipeline`'s.
        """
        settings = self.settings
        deadline = time.monotonic() + settings.request_timeout
        images_per_pass = images_per_pass or settings.batch_size
        runner = BatchRunner(self.decode_on_device, self.detect_frames, self.detect_pool, settings.parallel_batches,
                             deadline, settings.request_timeout)
        frames = load_ahead(expand(requests, self.resolve), self.load_frame, self.pool,
                            2 * max(images_per_pass, settings.s3_max_concurrency), deadline, settings.request_timeout)
        done = list(runner.run(batched(frames, images_per_pass)))
        timings = {"s3": sum(f.fetch_seconds for f in done), "decode": sum(f.decode_seconds for f in done)}
        for stage, seconds in runner.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        return Prediction(gather(done, len(requests)), several, self.detector.name, settings.untrained, timings,
                          runner.batches)

    def decode_on_device(self, frames: list[Frame]) -> list[Frame]:
        """A batch with its JPEGs left for the device decoder decoded there, in one call; what that decoder
        refuses is decoded on the CPU, and an image neither can decode fails in its place. The call's time is
        shared among the frames it decoded."""
        waiting = [i for i, frame in enumerate(frames) if frame.image.pixels is None]
        if not waiting:
            return frames
        start = time.perf_counter()
        decoded = decode_jpegs_on_device([frames[i].image for i in waiting], self.detector.device)
        ready = list(frames)
        for i, pixels in zip(waiting, decoded):
            frame = frames[i]
            try:
                image = frame.image._replace(pixels=pixels, jpeg=None) if pixels is not None else decode_image(
                    frame.image.jpeg, self.settings.max_image_bytes, self.settings.max_image_pixels,
                    frame.source or "request body")
                ready[i] = replace(frame, image=image)
            except RequestError as error:
                ready[i] = frame.failed(error)
        share = (time.perf_counter() - start) / len(waiting)
        return [replace(f, decode_seconds=f.decode_seconds + share) if i in waiting else f for i, f in enumerate(ready)]

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


def log_prediction(prediction: Prediction, status: int) -> None:
    """The request's log line: status, entries, the frames sampled from its videos, forward passes, per-entry and
    per-frame errors, milliseconds per stage."""
    videos = [r for r in prediction.results if isinstance(r, VideoResult)]
    errors = [r.error.status_code for r in prediction.results if isinstance(r, ImageFailure)] + [
        f.outcome.error.status_code for v in videos for f in v.frames if isinstance(f.outcome, ImageFailure)]
    log.info("detected status=%d images=%d frames=%d batches=%d errors=%s timings_ms=%s%s", status,
             len(prediction.results), sum(len(v.frames) for v in videos), prediction.batches, errors,
             json.dumps({stage: round(seconds * 1000, 2) for stage, seconds in prediction.timings.items()}),
             f" {UNTRAINED_WARNING}" if prediction.untrained else "")
