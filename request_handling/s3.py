"""Talking to S3: a client with bounded timeouts and retries, objects opened as streams, S3's errors as HTTP
statuses. What an object holds is `request_handling.media`'s to decide."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, NamedTuple

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
CHANGED_CODES = {"PreconditionFailed", "412"}  # a ranged read's If-Match: the object was replaced since it was opened


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
    if code in CHANGED_CODES or status == 412:
        return RequestError(409, f"{source} was replaced in S3 while it was read; send the request again")
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


class OpenedObject(NamedTuple):
    body: BinaryIO  # the streaming body
    size: int | None  # None when S3 does not say
    etag: str | None  # the version read: a later ranged read asks for the same one


def open_object(client, bucket: str, key: str) -> OpenedObject:
    """An object opened for reading; call inside `s3_errors`, which also covers the reads from the body."""
    response = client.get_object(Bucket=bucket, Key=key)
    return OpenedObject(response["Body"], response.get("ContentLength"), response.get("ETag"))


class RangedObject(io.RawIOBase):
    """A seekable, read-only file over an S3 object that fetches, by byte ranges, what is read of it: a decoder that
    seeks reads only what it decodes. Each range reaches past the read by a read-ahead that starts at the smaller
    of `read_ahead` and doubles while reads follow each other, up to the larger; at most `max_bytes` are fetched
    in all (then `too_much()` is raised). Every range is of the version `etag` names (409 once it is replaced: a
    clip is never read half from one upload and half from the next). S3's errors are raised as `s3_errors` says."""

    def __init__(self, client, bucket: str, key: str, size: int | None, etag: str | None, source: str,
                 read_ahead: tuple[int, int], max_bytes: int, too_much: Callable[[], Exception]) -> None:
        super().__init__()
        self.client, self.bucket, self.key, self.source = client, bucket, key, source
        self.pinned = {"IfMatch": etag} if etag else {}
        self.size = size if size is not None else self._size()
        self.smallest, self.largest = read_ahead
        self.max_bytes, self.too_much = max_bytes, too_much
        self.position = 0
        self.buffer, self.buffer_start = b"", 0
        self.next_read_ahead = self.smallest
        self.fetched = 0  # bytes, in all

    def _size(self) -> int:
        with s3_errors(self.source):
            return self.client.head_object(Bucket=self.bucket, Key=self.key, **self.pinned)["ContentLength"]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.size:
            return 0
        offset = self.position - self.buffer_start
        if not 0 <= offset < len(self.buffer):
            self._fetch(len(buffer))
            offset = 0
        count = min(len(buffer), len(self.buffer) - offset)
        buffer[:count] = self.buffer[offset:offset + count]
        self.position += count
        return count

    def _fetch(self, wanted: int) -> None:
        """The range from the position on: what is wanted and the read-ahead (doubled when this read follows the
        last range, else back to the smallest)."""
        following = bool(self.buffer) and self.position == self.buffer_start + len(self.buffer)
        self.next_read_ahead = min(self.largest, 2 * self.next_read_ahead) if following else self.smallest
        end = min(self.size, self.position + max(wanted, self.next_read_ahead))
        if self.fetched + end - self.position > self.max_bytes:
            raise self.too_much()
        with s3_errors(self.source):
            response = self.client.get_object(Bucket=self.bucket, Key=self.key,
                                              Range=f"bytes={self.position}-{end - 1}", **self.pinned)
            with response["Body"] as body:
                self.buffer = body.read()
        self.buffer_start = self.position
        self.fetched += len(self.buffer)
