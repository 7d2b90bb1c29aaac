"""SageMaker entry point (the sagemaker-inference toolkit's contract) for EfficientDet object detection.

model_fn loads the checkpoint once per worker; transform_fn answers each request through the one request contract
both servers share (`request_handling.contract`): it parses CSV / JSON / JSON Lines / image and video bodies,
checks the Accept header before any work, detects, and serialises, or answers a failure's one line.

Errors never reach the toolkit, whose handle_error would put a Python traceback in the body: transform_fn takes
TorchServe's context (the toolkit passes it to a function with one more parameter) and sets a failed request's
status there; its body is the same one line and Content-Type as the Ray Serve image's.

Process-wide state, forced by the toolkit and all of it here: model_fn switches off the toolkit's UTF-8 decoding
of text bodies (content_types.UTF8_TYPES, module-level in the toolkit). Everything else (settings, S3 client,
thread pools, model) lives in the DetectionService model_fn returns.
"""

from __future__ import annotations

from http import HTTPStatus

from sagemaker_inference import content_types

from request_handling.attributes import HEADER as CUSTOM_ATTRIBUTES
from request_handling.contract import HttpRequest, handle
from request_handling.service import DetectionService
from request_handling.settings import load_settings


def model_fn(model_dir: str, context=None) -> DetectionService:
    # The toolkit decodes text/csv and application/json bodies as UTF-8 before transform_fn and answers a
    # decoding error with 500; leave those bodies as bytes so that the contract answers 400 instead.
    content_types.UTF8_TYPES.clear()
    # TorchServe gives each worker its GPU (one worker per GPU by default on a GPU instance)
    gpu_id = context.system_properties.get("gpu_id") if context is not None else None
    return DetectionService.load(model_dir, load_settings(model_dir), gpu_id)


def request_header(context, name: str) -> str | None:
    """A header of the request being handled, whatever its case (TorchServe's context)."""
    if context is None:
        return None
    wanted = name.lower()
    properties = context.request_processor[0].get_request_properties()
    return next((value for key, value in properties.items() if key.lower() == wanted), None)


def transform_fn(model: DetectionService, input_data: bytes | str, content_type: str, accept: str,
                 context=None) -> tuple[str, str]:
    """The response body and its media type; a failed request's status is set on TorchServe's context."""
    answer = handle(HttpRequest(input_data, content_type, request_header(context, "Accept") or accept,
                                request_header(context, CUSTOM_ATTRIBUTES)), model)
    if answer.status != 200 and context is not None:
        context.set_response_status(answer.status, HTTPStatus(answer.status).phrase)
    return answer.body, answer.media_type
