"""SageMaker entry point (sagemaker-inference toolkit contract) for EfficientDet object detection.

model_fn loads the checkpoint once per worker; input_fn parses CSV / JSON / JSON Lines / image
bodies; predict_fn fetches the images from S3 and detects; output_fn serialises the detections.
Client errors are raised as GenericInferenceToolkitError so the toolkit answers with their status.
"""

from __future__ import annotations

import json
import logging
import time

import torch
from sagemaker_inference import content_types

from request_handling.requests import parse_request
from request_handling.responses import negotiate, serialise
from request_handling.service import UNTRAINED_WARNING, DetectionService, Prediction
from request_handling.settings import load_settings, max_images_per_request

log = logging.getLogger("efficientdet.serving")


def model_fn(model_dir: str) -> DetectionService:
    # The toolkit decodes text/csv and application/json bodies as UTF-8 before input_fn and answers a
    # decoding error with 500; leave those bodies as bytes so that input_fn answers 400 instead.
    content_types.UTF8_TYPES.clear()
    settings = load_settings(model_dir)
    torch.set_num_threads(settings.num_threads)
    return DetectionService.load(model_dir, settings)


def input_fn(input_data: str | bytes, content_type: str):
    return parse_request(input_data, content_type, max_images_per_request())


def predict_fn(data, model: DetectionService) -> Prediction:
    requests, several = data
    return model.predict(requests, several)


def output_fn(prediction: Prediction, accept: str) -> tuple[str, str]:
    content_type = negotiate(accept)
    start = time.perf_counter()
    body = serialise(prediction.results, prediction.several, content_type)
    timings = dict(prediction.timings, serialise=time.perf_counter() - start)
    batches = timings.pop("batches", 0)
    errors = [r["error"]["status"] for r in prediction.results if "error" in r]
    log.info("detected images=%d batches=%d errors=%s timings_ms=%s%s", len(prediction.results), batches, errors,
             json.dumps({stage: round(seconds * 1000, 2) for stage, seconds in timings.items()}),
             f" {UNTRAINED_WARNING}" if prediction.untrained else "")
    return body, content_type
