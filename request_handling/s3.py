"""Reading image and video objects from S3: bounded timeouts and retries, errors as HTTP statuses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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

from .errors import RequestError, bad_request, forbidden, not_found, too_large
from .video import SIGNATURE_BYTES, is_video, refuse_other_containers, spooled

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


def fetch_media(client, bucket: str, key: str, max_image_bytes: int, max_video_bytes: int) -> bytes | Path:
    """An image's bytes, or a video (told by its first bytes) streamed into a temporary file whose path the caller
    removes: a clip is never held in memory. RequestError 404/403/502/503/504 when S3 cannot provide it, 413 over
    MAX_IMAGE_BYTES or MAX_VIDEO_BYTES, 415 for a video container we do not read, 400 for an empty object."""
    source = f"s3://{bucket}/{key}"
    with s3_errors(source):
        response = client.get_object(Bucket=bucket, Key=key)
        with response["Body"] as body:
            head = body.read(SIGNATURE_BYTES)
            refuse_other_containers(head, source)
            if is_video(head):
                if response.get("ContentLength", 0) > max_video_bytes:
                    raise too_large(f"{source} is {response['ContentLength']} bytes; the limit is MAX_VIDEO_BYTES="
                                    f"{max_video_bytes}")
                return spooled(body, head, max_video_bytes, source)
            return _bounded(response, body, head, max_image_bytes, source)


def _bounded(response: dict, body, head: bytes, max_bytes: int, source: str) -> bytes:
    """The rest of an object's body after `head`, at most max_bytes in all (413), not empty (400)."""
    if response.get("ContentLength", 0) > max_bytes:
        raise too_large(f"{source} is {response['ContentLength']} bytes; the limit is {max_bytes}")
    data = head + body.read(max_bytes + 1 - len(head))
    if len(data) > max_bytes:
        raise too_large(f"{source} is larger than the limit of {max_bytes} bytes")
    if not data:
        raise bad_request(f"{source} is empty (0 bytes)")
    return data
