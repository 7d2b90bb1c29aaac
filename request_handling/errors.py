"""Request errors carry an HTTP status and a one-line message; each server answers with them."""

from __future__ import annotations

import logging
import unicodedata
from http import HTTPStatus

MAX_MESSAGE_CHARACTERS = 500
ERROR_MEDIA_TYPE = "text/plain; charset=utf-8"  # both images' error bodies: the one-line message and a newline
log = logging.getLogger("efficientdet.serving")
UNPRINTABLE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}  # controls, bidi/format, line breaks, …


def one_line(text: str, limit: int = MAX_MESSAGE_CHARACTERS) -> str:
    """Text safe for the first line of an error body: every control, line or paragraph separator and
    bidi/format character escaped (\\n, \\u202e …), cut to `limit` characters."""
    escaped = "".join(
        c.encode("unicode_escape", "backslashreplace").decode("ascii") if unicodedata.category(c) in UNPRINTABLE_CATEGORIES
        else c for c in text)
    return escaped if len(escaped) <= limit else escaped[:limit - 1] + "…"


class RequestError(Exception):
    """An error the client should see, with its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        self.status_code = status
        self.message = one_line(message)
        self.phrase = HTTPStatus(status).phrase
        super().__init__(status, self.message)

    def __str__(self) -> str:
        return f"{self.status_code} {self.phrase}: {self.message}"

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


def timed_out(message: str) -> RequestError:
    return RequestError(504, message)


def error_body(error: RequestError) -> str:
    """What both images answer for a failed request: its one-line message and a newline (ERROR_MEDIA_TYPE)."""
    return error.message + "\n"


def failure(error: Exception) -> RequestError:
    """The RequestError to answer for an exception raised while handling a request, logged: one line for a
    client's error; for a 5xx, the traceback too (CloudWatch on an endpoint). An exception none of our checks
    expected is a 500 whose message names only its type."""
    answer = error if isinstance(error, RequestError) else RequestError(
        500, f"internal error ({type(error).__name__}); the endpoint's log has the details")
    if answer.status_code >= 500:
        log.error("request failed status=%d: %s", answer.status_code, answer.message, exc_info=error)
    else:
        log.info("request failed status=%d: %s", answer.status_code, answer.message)
    return answer
