"""REQUEST_TIMEOUT: every request answers within its budget, whatever S3 does, and the service goes on."""

from __future__ import annotations

import socket
import threading

import pytest
from helpers import SAMPLE_IMAGE

from efficientdet import Detector
from request_handling.bodies import EntryRequest
from request_handling.results import EntryFailure, ImageResult
from request_handling.service import DetectionService
from request_handling.settings import Settings

pytestmark = pytest.mark.production


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
    prediction = service.predict([EntryRequest("videoblocks-ml", "frames/1.jpg")], several=False)
    error = prediction.request_error()
    assert error.status_code == 504 and "REQUEST_TIMEOUT=1.5 s" in error.message
    assert "s3://videoblocks-ml/frames/1.jpg" in error.message


def test_images_detected_before_the_deadline_keep_their_detections(service):
    """Images are detected in request order: those before the late one are answered, the rest are 504s."""
    requests = [EntryRequest(inline=SAMPLE_IMAGE.read_bytes()), EntryRequest("videoblocks-ml", "frames/2.jpg"),
                EntryRequest(inline=SAMPLE_IMAGE.read_bytes())]
    prediction = service.predict(requests, several=True)
    first, late, after = prediction.results
    assert isinstance(first, ImageResult) and first.detections
    assert isinstance(late, EntryFailure) and late.error.status_code == 504 and "read and decoded" in late.error.message
    assert isinstance(after, EntryFailure) and after.error.status_code == 504 and "detected" in after.error.message
    assert prediction.request_error() is None


def test_the_service_keeps_serving_after_a_deadline(service):
    for key in ("frames/3.jpg", "frames/4.jpg"):
        assert service.predict([EntryRequest("videoblocks-ml", key)], several=False).request_error().status_code == 504
    inline = service.predict([EntryRequest(inline=SAMPLE_IMAGE.read_bytes())], several=False)
    assert isinstance(inline.results[0], ImageResult)


def test_a_clip_that_outruns_the_deadline_answers_the_frames_done_and_a_504_for_the_rest(service, tmp_path):
    """Every frame of a 20 s clip cannot be detected within REQUEST_TIMEOUT=1.5 s on any machine: the answer keeps
    the frames detected in time, in order, and says 504 for the rest of the clip."""
    from helpers.clips import encode, require_ffmpeg

    require_ffmpeg()
    clip = encode(tmp_path / "long.mp4", width=320, height=180, rate="30", seconds=20)
    [result] = service.predict([EntryRequest(inline=clip.read_bytes(), every_n_frames=1)], several=False).results
    if isinstance(result, EntryFailure):  # not even the first frame was reached in time
        assert result.error.status_code == 504
        return
    assert result.error.status_code == 504
    assert result.error.message == "the clip was not read to the end of its sampling within REQUEST_TIMEOUT=1.5 s"
    assert 0 < len(result.frames) < 600
    assert [f.index for f in result.frames] == list(range(len(result.frames)))
    assert all(isinstance(f.outcome, ImageResult) or f.outcome.error.status_code == 504 for f in result.frames)
