"""Amazon Rekognition's own response model, from botocore's service data, to hold our Rekognition shapes to."""

from __future__ import annotations

import botocore.session
from botocore.validate import ParamValidator


def get_label_detection_errors(answer: dict) -> str:
    """What botocore's validator finds wrong with an answer against GetLabelDetection's response shape ('' if
    nothing): every key must be the model's, every value of the model's type."""
    shape = botocore.session.get_session().get_service_model("rekognition").operation_model(
        "GetLabelDetection").output_shape
    return ParamValidator().validate(answer, shape).generate_report()
