"""SageMaker entry point (sagemaker-inference toolkit contract) for EfficientDet object detection.

model_fn loads the checkpoint once per worker; input_fn parses CSV / JSON / JSON Lines / image
bodies and checks the Accept header before any work; predict_fn fetches the images from S3 and
detects; output_fn serialises the detections. Our RequestErrors leave each function as the toolkit's
GenericInferenceToolkitError, so that the toolkit answers with their status and message.

Process-wide state, all of it forced by the toolkit and all of it here: model_fn switches off the
toolkit's UTF-8 decoding of text bodies (content_types.UTF8_TYPES, module-level in the toolkit), and
input_fn, which the toolkit calls without the model, reads MAX_IMAGES_PER_REQUEST from the environment.
Everything else (settings, S3 client, thread pools, model) lives in the DetectionService model_fn returns.
"""

from __future__ import annotations

import functools

from sagemaker_inference import content_types
from sagemaker_inference.errors import GenericInferenceToolkitError

from request_handling.attributes import HEADER as CUSTOM_ATTRIBUTES
from request_handling.attributes import parse_custom_attributes, with_attributes
from request_handling.bodies import parse_request
from request_handling.errors import RequestError
from request_handling.responses import negotiate, respond
from request_handling.service import DetectionService, Prediction
from request_handling.settings import load_settings, max_images_per_request


def toolkit_errors(function):
    """RequestError → the toolkit's error type (the wrapper keeps the signature the toolkit inspects)."""
    @functools.wraps(function)
    def wrapper(*args):
        try:
            return function(*args)
        except RequestError as error:
            raise GenericInferenceToolkitError(error.status_code, error.message, error.phrase) from None
    return wrapper


def model_fn(model_dir: str) -> DetectionService:
    # The toolkit decodes text/csv and application/json bodies as UTF-8 before input_fn and answers a
    # decoding error with 500; leave those bodies as bytes so that input_fn answers 400 instead.
    content_types.UTF8_TYPES.clear()
    return DetectionService.load(model_dir, load_settings(model_dir))


def request_header(context, name: str) -> str | None:
    """A header of the request being handled, whatever its case (TorchServe's context)."""
    if context is None:
        return None
    wanted = name.lower()
    properties = context.request_processor[0].get_request_properties()
    return next((value for key, value in properties.items() if key.lower() == wanted), None)


@toolkit_errors
def input_fn(input_data: str | bytes, content_type: str, context=None):
    # input_fn has no model: MAX_IMAGES_PER_REQUEST is read from the environment (microseconds).
    negotiate(request_header(context, "Accept"))  # 406 before anything is fetched or detected
    requests, several = parse_request(input_data, content_type, max_images_per_request())
    options = parse_custom_attributes(request_header(context, CUSTOM_ATTRIBUTES))
    return with_attributes(requests, options), several


@toolkit_errors
def predict_fn(data, model: DetectionService) -> Prediction:
    requests, several = data
    model.check_response_size(requests)
    return model.predict(requests, several)


@toolkit_errors
def output_fn(prediction: Prediction, accept: str) -> tuple[str, str]:
    response_type = negotiate(accept)
    return respond(prediction, response_type), response_type.media_type
