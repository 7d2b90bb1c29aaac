"""Request errors carry an HTTP status; the SageMaker toolkit answers with it."""

from __future__ import annotations

from http import HTTPStatus

from sagemaker_inference.errors import GenericInferenceToolkitError


class RequestError(GenericInferenceToolkitError):
    """An error the client should see, with its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message, HTTPStatus(status).phrase)

    def as_dict(self) -> dict:
        return {"status": self.status_code, "message": self.message}


def bad_request(message: str) -> RequestError:
    return RequestError(400, message)


def forbidden(message: str) -> RequestError:
    return RequestError(403, message)


def not_found(message: str) -> RequestError:
    return RequestError(404, message)


def too_large(message: str) -> RequestError:
    return RequestError(413, message)
