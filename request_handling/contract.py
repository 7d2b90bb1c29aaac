"""The request contract both servers answer by, in one place: an HTTP request (body, Content-Type, Accept,
Custom-Attributes) → status, body and media type.

    negotiate Accept (406) → body size (413) → parse the body (400, 413, 415) → Custom-Attributes (400)
    → the response's size (413) → predict → serialise, or the one-line error body of a failure

`inference.transform_fn` (TorchServe's toolkit) calls `handle`; the Ray Serve app calls `accept`, predicts (merging
single images of many clients into one forward pass) and then `answered`, or `failed` for whatever was raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .attributes import parse_custom_attributes, with_attributes
from .bodies import EntryRequest, parse_request
from .errors import ERROR_MEDIA_TYPE, error_body, failure, too_large
from .responses import ResponseType, negotiate, respond
from .results import Prediction

if TYPE_CHECKING:
    from .service import DetectionService


@dataclass(frozen=True)
class HttpRequest:
    """What a server received: the body and the headers the contract reads."""

    body: bytes | str
    content_type: str | None
    accept: str | None = None
    custom_attributes: str | None = None


@dataclass(frozen=True)
class HttpAnswer:
    """What a server sends back."""

    status: int
    body: str
    media_type: str


@dataclass(frozen=True)
class AcceptedRequest:
    """A request the contract will answer: its entries with their options, whether the body listed several (the
    answer is then a list), and the response type its Accept header chose."""

    entries: list[EntryRequest]
    several: bool
    response_type: ResponseType


def accept(request: HttpRequest, service: DetectionService) -> AcceptedRequest:
    """The request's entries, checked before anything is fetched or detected; RequestError otherwise."""
    settings = service.settings
    response_type = negotiate(request.accept)
    if len(request.body) > settings.max_request_bytes:
        raise too_large(f"request body is {len(request.body)} bytes; the limit is TS_MAX_REQUEST_SIZE="
                        f"{settings.max_request_bytes}")
    parsed = parse_request(request.body, request.content_type, settings.max_images_per_request)
    entries = with_attributes(parsed.entries, parse_custom_attributes(request.custom_attributes))
    service.check_response_size(entries)
    return AcceptedRequest(entries, parsed.several, response_type)


def answered(prediction: Prediction, accepted: AcceptedRequest) -> HttpAnswer:
    """The 200 answer of a prediction; RequestError when every entry failed (the request answers its error)."""
    return HttpAnswer(200, respond(prediction, accepted.response_type), accepted.response_type.media_type)


def failed(error: Exception) -> HttpAnswer:
    """The one-line answer of a failure: a RequestError's status, anything else a logged 500."""
    answer = failure(error)
    return HttpAnswer(answer.status_code, error_body(answer), ERROR_MEDIA_TYPE)


def handle(request: HttpRequest, service: DetectionService) -> HttpAnswer:
    """The whole contract, for a server that predicts each request on its own."""
    try:
        accepted = accept(request, service)
        return answered(service.predict(accepted.entries, several=accepted.several), accepted)
    except Exception as error:  # noqa: BLE001 - every failure is answered here, never by the server
        return failed(error)
