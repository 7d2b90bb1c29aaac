"""REQUEST_TIMEOUT: every request answers within its budget, whatever S3 does, and the service goes on."""

from __future__ import annotations

import socket
import threading

import pytest
from conftest import SAMPLE_IMAGE

from efficientdet import Detector
from request_handling.bodies import ImageRequest
from request_handling.service import DetectionService, ImageFailure, ImageResult
from request_handling.settings import Settings


class FrozenS3:
    """A loopback endpoint that accepts connections and never answers, like an S3 that hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.connections.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for s in [self.listener, *self.connections]:
            s.close()


@pytest.fixture(scope="module")
def frozen_s3():
    s3 = FrozenS3()
    yield s3
    s3.close()


@pytest.fixture
def service(reference, frozen_s3, monkeypatch):
    """botocore would wait 2 × 30 s for this S3; the request's budget is 1.5 s."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{frozen_s3.port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    return DetectionService(detector, Settings(batch_size=1, request_timeout=1.5, s3_read_timeout=30.0,
                                               s3_max_attempts=2, parallel_batches=1))


def test_a_request_waiting_on_a_frozen_s3_answers_504_within_its_budget(service):
    prediction = service.predict([ImageRequest("videoblocks-ml", "frames/1.jpg")], several=False)
    error = prediction.request_error()
    assert error.status_code == 504 and "REQUEST_TIMEOUT=1.5 s" in error.message
    assert "s3://videoblocks-ml/frames/1.jpg" in error.message


def test_images_detected_before_the_deadline_keep_their_detections(service):
    """Images are detected in request order: those before the late one are answered, the rest are 504s."""
    requests = [ImageRequest(image_bytes=SAMPLE_IMAGE.read_bytes()), ImageRequest("videoblocks-ml", "frames/2.jpg"),
                ImageRequest(image_bytes=SAMPLE_IMAGE.read_bytes())]
    prediction = service.predict(requests, several=True)
    first, late, after = prediction.results
    assert isinstance(first, ImageResult) and first.detections
    assert isinstance(late, ImageFailure) and late.error.status_code == 504 and "read and decoded" in late.error.message
    assert isinstance(after, ImageFailure) and after.error.status_code == 504 and "detected" in after.error.message
    assert prediction.request_error() is None


def test_the_service_keeps_serving_after_a_deadline(service):
    for key in ("frames/3.jpg", "frames/4.jpg"):
        assert service.predict([ImageRequest("videoblocks-ml", key)], several=False).request_error().status_code == 504
    inline = service.predict([ImageRequest(image_bytes=SAMPLE_IMAGE.read_bytes())], several=False)
    assert isinstance(inline.results[0], ImageResult)
