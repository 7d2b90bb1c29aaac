"""SageMaker entry point (sagemaker-inference toolkit contract) for EfficientDet object detection.

model_fn loads the checkpoint once per worker; input_fn parses CSV / JSON / JSON Lines / image
bodies and checks the Accept header before any work; predict_fn fetches the images from S3 and
detects; output_fn serialises the detections.

Errors never reach the toolkit, whose handle_error would put a Python traceback in the body: each function
takes TorchServe's context (the toolkit passes it to a function with one more parameter), and a RequestError
sets the request's status there and travels on as a FailedRequest, which output_fn answers with the same one
line and Content-Type as the Ray Serve image (request_handling.errors.error_body). Anything else is logged with
its traceback and answered 500 the same way.

Process-wide state, all of it forced by the toolkit and all of it here: model_fn switches off the
toolkit's UTF-8 decoding of text bodies (content_types.UTF8_TYPES, module-level in the toolkit), and
input_fn, which the toolkit calls without the model, reads MAX_IMAGES_PER_REQUEST from the environment.
Everything else (settings, S3 client, thread pools, model) lives in the DetectionService model_fn returns.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

from sagemaker_inference import content_types

from request_handling.attributes import HEADER as CUSTOM_ATTRIBUTES
from request_handling.attributes import parse_custom_attributes, with_attributes
from request_handling.bodies import parse_request
from request_handling.errors import ERROR_MEDIA_TYPE, RequestError, error_body, failure
from request_handling.responses import negotiate, respond
from request_handling.service import DetectionService, Prediction
from request_handling.settings import load_settings, max_images_per_request


@dataclass(frozen=True)
class FailedRequest:
    """A request that failed in input_fn or predict_fn, passed on to output_fn, which answers it."""

    error: RequestError


def answering_errors(function):
    """A handler function whose exception (a RequestError, or any other as a logged 500) sets the request's status
    on TorchServe's context and comes back as a FailedRequest; a FailedRequest given to it is passed on untouched.
    The wrapper keeps the signature the toolkit inspects."""
    parameters = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args):
        failed = next((a for a in args if isinstance(a, FailedRequest)), None)
        if failed is not None:
            return failed
        try:
            return function(*args)
        except Exception as error:  # noqa: BLE001 - every failure is answered here, never by the toolkit
            failed = FailedRequest(failure(error))
        context = parameters.bind(*args).arguments.get("context")
        if context is not None:
            context.set_response_status(failed.error.status_code, failed.error.phrase)
        return failed
    return wrapper


def model_fn(model_dir: str, context=None) -> DetectionService:
    # The toolkit decodes text/csv and application/json bodies as UTF-8 before input_fn and answers a
    # decoding error with 500; leave those bodies as bytes so that input_fn answers 400 instead.
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


@answering_errors
def input_fn(input_data: str | bytes, content_type: str, context=None):
    # input_fn has no model: MAX_IMAGES_PER_REQUEST is read from the environment (microseconds).
    negotiate(request_header(context, "Accept"))  # 406 before anything is fetched or detected
    requests, several = parse_request(input_data, content_type, max_images_per_request())
    options = parse_custom_attributes(request_header(context, CUSTOM_ATTRIBUTES))
    return with_attributes(requests, options), several


@answering_errors
def predict_fn(data, model: DetectionService, context=None) -> Prediction:
    requests, several = data
    model.check_response_size(requests)
    return model.predict(requests, several)


@answering_errors
def serialised(prediction: Prediction, accept: str, context=None) -> tuple[str, str]:
    response_type = negotiate(accept)
    return respond(prediction, response_type), response_type.media_type


def output_fn(prediction: Prediction | FailedRequest, accept: str, context=None) -> tuple[str, str]:
    """The response body and its media type; for a failed request, its one-line error (its status is set)."""
    answer = serialised(prediction, accept, context)
    if isinstance(answer, FailedRequest):
        return error_body(answer.error), ERROR_MEDIA_TYPE
    return answer
