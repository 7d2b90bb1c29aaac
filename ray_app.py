"""Ray Serve entry point for the AWS Ray Serve DLC: the contract of inference.py (bodies, statuses, response
schema, settings from the same environment variables), with single-image requests from many clients merged
into one forward pass (Ray Serve's dynamic batching).

The image runs `serve run /opt/ml/model/config.yaml`, whose import path is `ray_app:app`; this file lives
in the archive's code/, so the model dir is its parent's parent.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from request_handling.attributes import HEADER as CUSTOM_ATTRIBUTES
from request_handling.attributes import parse_custom_attributes, with_attributes
from request_handling.bodies import SAMPLING_FIELDS, ImageRequest, parse_request
from request_handling.errors import ERROR_MEDIA_TYPE, error_body, failure, too_large
from request_handling.responses import negotiate, respond
from request_handling.service import DetectionService, Prediction
from request_handling.settings import load_settings, model_server_workers
from request_handling.video import SIGNATURE_BYTES, is_video

MODEL_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger("efficientdet.serving")


@serve.deployment(name="EfficientDet", max_ongoing_requests=64)
class EfficientDetDeployment:
    """One model replica: multi-image requests run as they come, single-image ones are batched."""

    def __init__(self, model_dir: str | None = None) -> None:
        log_to_stderr()
        model_dir = model_dir or str(MODEL_DIR)
        self.settings = load_settings(model_dir, replica_environment())
        # One thread loads, warms up and runs every forward pass: its OpenMP threads stay ready (measured
        # on CPU: a pass on the thread that warmed the model up is 1.4× faster than on another thread).
        self.detect_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect")
        self.service = self.detect_thread.submit(DetectionService.load, model_dir, self.settings).result()
        self.detect_batch.set_max_batch_size(self.settings.request_batch_size)
        self.detect_batch.set_batch_wait_timeout_s(self.settings.request_batch_wait_ms / 1000)

    async def __call__(self, request: Request) -> Response:
        try:
            response_type = negotiate(request.headers.get("accept"))
            body = await request.body()
            if len(body) > self.settings.max_request_bytes:
                raise too_large(f"request body is {len(body)} bytes; the limit is TS_MAX_REQUEST_SIZE="
                                f"{self.settings.max_request_bytes}")
            requests, several = parse_request(body, request.headers.get("content-type"),
                                              self.settings.max_images_per_request)
            requests = with_attributes(requests, parse_custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES)))
            self.service.check_response_size(requests)
            if several or may_be_video(requests[0]):
                # its S3 reads (or a clip's many frames) may take long: not on the detect thread, which the merged
                # batches need
                prediction = await asyncio.to_thread(self.service.predict, requests, several)
            else:
                prediction = await self.detect_batch(requests[0])
            return Response(respond(prediction, response_type), media_type=response_type.media_type)
        except Exception as error:  # noqa: BLE001 - answered like the TorchServe image: one line, logged
            answer = failure(error)
            return Response(error_body(answer), status_code=answer.status_code, media_type=ERROR_MEDIA_TYPE)

    async def _on_detect_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.detect_thread, function, *args)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def detect_batch(self, requests: list[ImageRequest]) -> list[Prediction]:
        """Single-image requests of different clients, detected in one forward pass; each gets its own
        outcome (and so its own status): a bad image never fails its neighbours."""
        merged = await self._on_detect_thread(self.service.predict, requests, True, len(requests))
        log.info("request batch: images=%d forward_passes=%d", len(requests), merged.batches)
        return [Prediction([result], False, merged.model, merged.untrained, dict(merged.timings), merged.batches)
                for result in merged.results]


def may_be_video(request: ImageRequest) -> bool:
    """A clip sent inline, or an entry with sampling options: not merged with other clients' single images (an
    S3 clip without them is told only once fetched, and is then detected in the merged batch, correctly)."""
    if request.image_bytes is not None:
        return is_video(request.image_bytes[:SIGNATURE_BYTES])
    return any(getattr(request, name) is not None for name in SAMPLING_FIELDS)


def replicas() -> int:
    """SAGEMAKER_MODEL_SERVER_WORKERS, as on the TorchServe image; by default one replica per GPU, else one per core
    (measured on 2 cores: two 1-thread replicas answer 1.3× the images/s of one 2-thread replica)."""
    return model_server_workers(os.environ)


def replica_environment() -> dict[str, str]:
    """The environment, with the replica count as the model server workers: each replica's torch threads
    default to its share of the cores (EFFICIENTDET_NUM_THREADS sets them outright)."""
    return dict(os.environ, SAGEMAKER_MODEL_SERVER_WORKERS=str(replicas()))


def log_to_stderr() -> None:
    """The handler's log lines on the replica's stderr (Ray keeps it per worker), as TorchServe's log has them."""
    logger = logging.getLogger("efficientdet")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def application() -> serve.Application:
    """The replicas share the GPUs (fractions where there are more replicas than GPUs) or the cores;
    config.yaml's deployments section overrides any of this."""
    count = replicas()
    gpus = min(1.0, torch.cuda.device_count() / count) if torch.cuda.is_available() else 0  # a replica uses one
    return EfficientDetDeployment.options(num_replicas=count, ray_actor_options={"num_gpus": gpus, "num_cpus": 0}).bind()


app = application()
