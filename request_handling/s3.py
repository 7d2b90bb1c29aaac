"""Talking to S3: a client with bounded timeouts and retries, objects opened as streams, S3's errors as HTTP
statuses. What an object holds is `request_handling.media`'s to decide."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from urllib3.exceptions import ProtocolError

from .errors import RequestError, forbidden, not_found

NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
FORBIDDEN_CODES = {"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                   "AccountProblem", "InvalidObjectState", "ExpiredToken", "InvalidToken"}
UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "503", "RequestTimeout"}


def make_client(connect_timeout: float, read_timeout: float, max_attempts: int, max_pool: int):
    """An S3 client with botocore's standard retries (AWS_ENDPOINT_URL_S3 is honoured by boto3)."""
    config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                    retries={"max_attempts": max_attempts, "mode": "standard"}, max_pool_connections=max_pool)
    return boto3.session.Session().client("s3", config=config)


def _client_error(error: ClientError, source: str) -> RequestError:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in NOT_FOUND_CODES or status == 404:
        return not_found(f"{source} does not exist ({code or status})")
    if code in FORBIDDEN_CODES or status == 403:
        return forbidden(f"access to {source} is denied by S3 ({code or status})")
    if code in UNAVAILABLE_CODES or status == 503:
        return RequestError(503, f"S3 is unavailable reading {source} ({code or status}); try again")
    return RequestError(502, f"S3 failed reading {source} ({code or status})")


@contextmanager
def s3_errors(source: str) -> Iterator[None]:
    """What S3 or the connection to it raises, as the RequestError a client should see (404/403/502/503/504)."""
    try:
        yield
    except ClientError as error:
        raise _client_error(error, source) from None
    except (ReadTimeoutError, ConnectTimeoutError):
        raise RequestError(504, f"S3 did not answer in time reading {source}") from None
    except (EndpointConnectionError, ConnectionClosedError, ProtocolError):
        raise RequestError(503, f"S3 is unavailable (connection failed) reading {source}") from None
    except NoCredentialsError:
        raise RequestError(503, "S3 cannot be read: the server has no AWS credentials") from None
    except BotoCoreError as error:
        raise RequestError(502, f"S3 failed reading {source}: {type(error).__name__}") from None


def open_object(client, bucket: str, key: str) -> tuple[BinaryIO, int | None]:
    """An object's streaming body and its size (None when S3 does not say); call inside `s3_errors`, which also
    covers the reads from the body."""
    response = client.get_object(Bucket=bucket, Key=key)
    return response["Body"], response.get("ContentLength")
