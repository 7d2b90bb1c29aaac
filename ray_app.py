"""Ray Serve entry point for the AWS Ray Serve DLC: the contract of inference.py (bodies, statuses, response
schema, settings from the same environment variables), with single-image requests from many clients merged
into one forward pass (Ray Serve's dynamic batching).

The image runs `serve run /opt/ml/model/config.yaml`, whose import path is `ray_app:build` (an application builder
given the config's `args`: the replicas' autoscaling); this file lives in the archive's code/, so the model dir is its
parent's parent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from ray import serve
from ray.serve.config import AutoscalingConfig
from starlette.requests import Request
from starlette.responses import Response

from request_handling import contract
from request_handling.attributes import HEADER as CUSTOM_ATTRIBUTES
from request_handling.bodies import EntryRequest
from request_handling.media import may_be_clip
from request_handling.results import Prediction
from request_handling.service import DetectionService
from request_handling.settings import load_settings, model_server_workers

MODEL_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger("efficientdet.serving")


@serve.deployment(name="EfficientDet", max_ongoing_requests=64)
class EfficientDetDeployment:
    """One model replica: multi-image requests run as they come, single-image ones are batched."""

    def __init__(self, model_dir: str | None = None) -> None:
        log_to_stderr()
        model_dir = model_dir or str(MODEL_DIR)
        self.settings = load_settings(model_dir, replica_environment())
        # One thread loads, warms up and runs every forward pass: its OpenMP threads stay ready (on CPU a pass on
        # another thread than the one that warmed the model up is slower; docs/benchmarks.md).
        self.detect_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect")
        self.service = self.detect_thread.submit(DetectionService.load, model_dir, self.settings).result()
        self.detect_batch.set_max_batch_size(self.settings.request_batch_size)
        self.detect_batch.set_batch_wait_timeout_s(self.settings.request_batch_wait_ms / 1000)

    async def __call__(self, request: Request) -> Response:
        try:
            http = contract.HttpRequest(await request.body(), request.headers.get("content-type"),
                                        request.headers.get("accept"), request.headers.get(CUSTOM_ATTRIBUTES))
            accepted = contract.accept(http, self.service)
            if accepted.several or may_be_clip(accepted.entries[0]):
                # its S3 reads (or a clip's many frames) may take long: not on the detect thread, which the merged
                # batches need
                prediction = await asyncio.to_thread(self.service.predict, accepted.entries,
                                                     several=accepted.several)
            else:
                prediction = await self.detect_batch(accepted.entries[0])
            answer = contract.answered(prediction, accepted)
        except Exception as error:  # noqa: BLE001 - answered like the TorchServe image: one line, logged
            answer = contract.failed(error)
        return Response(answer.body, status_code=answer.status, media_type=answer.media_type)

    async def _on_detect_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.detect_thread, function, *args)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def detect_batch(self, requests: list[EntryRequest]) -> list[Prediction]:
        """Single-image requests of different clients, detected in one forward pass; each gets its own
        outcome (and so its own status): a bad image never fails its neighbours."""
        merged = await self._on_detect_thread(functools.partial(self.service.predict, requests, several=True,
                                                                images_per_pass=len(requests)))
        log.info("request batch: images=%d forward_passes=%d", len(requests), merged.batches)
        return [Prediction([result], several=False, model=merged.model, untrained=merged.untrained,
                           timings=dict(merged.timings), batches=merged.batches) for result in merged.results]


def replicas() -> int:
    """SAGEMAKER_MODEL_SERVER_WORKERS, as on the TorchServe image; by default one replica per GPU, else one per core
    (one-thread replicas answer more images/s than one replica with every thread; docs/benchmarks.md)."""
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


AUTO = "auto"  # in config.yaml's autoscaling_config: the replicas one instance holds (`replicas()`)
AUTO_FIELDS = ("initial_replicas", "max_replicas")


def autoscaling_config(configured: dict[str, Any]) -> AutoscalingConfig:
    """Ray Serve's autoscaling_config from config.yaml's, its "auto" counts resolved to the replicas one instance
    holds; a wrong field or value is one clear error at start."""
    unknown = sorted(set(configured) - set(AutoscalingConfig.model_fields))
    if unknown:
        raise ValueError(f"config.yaml args.autoscaling_config: unknown fields {unknown}")
    resolved = {name: replicas() if value == AUTO and name in AUTO_FIELDS else value
                for name, value in configured.items()}
    try:
        return AutoscalingConfig(**resolved)
    except ValidationError as error:
        reasons = "; ".join(problem["msg"] for problem in error.errors())
        raise ValueError(f"config.yaml args.autoscaling_config {configured}: {reasons}") from None


def build(args: dict[str, Any]) -> serve.Application:
    """config.yaml's application: replicas scaled by Ray Serve on their ongoing requests, within the config's
    bounds; they share the GPUs (fractions where there are more replicas than GPUs) or the cores. A replica takes
    requests once loaded and warmed up; `initial_replicas` of them start with the app. config.yaml's own
    `deployments` section overrides any of this."""
    log_to_stderr()
    autoscaling = autoscaling_config(args.get("autoscaling_config") or {})
    count = replicas()
    gpus = min(1.0, torch.cuda.device_count() / count) if torch.cuda.is_available() else 0  # a replica uses one
    log.info("replicas: autoscaling %d..%d, %d at start, target %s ongoing requests each",
             autoscaling.min_replicas, autoscaling.max_replicas, autoscaling.initial_replicas or
             autoscaling.min_replicas, autoscaling.target_ongoing_requests)
    return EfficientDetDeployment.options(autoscaling_config=autoscaling,
                                          ray_actor_options={"num_gpus": gpus, "num_cpus": 0}).bind()
