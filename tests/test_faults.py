"""S3 faults against the running server: S3 down (503, then recovery), S3 too slow (504), access denied (403)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests
from helpers import SAMPLE_IMAGE, USER_BUCKET, USER_KEY

from localrun.ports import free_port
from localrun.s3server import LIMITED, SeaweedS3
from localrun.serve import ModelServer

pytestmark = pytest.mark.dev

BODY = json.dumps({"bucket": USER_BUCKET, "key": USER_KEY})
SERVER_TIMEOUT = 30
SAGEMAKER_REALTIME_LIMIT = 60  # seconds: SageMaker cuts a realtime invocation there
PRIVATE_BUCKET = "another-teams-bucket"


class SlowProxy:
    """A TCP proxy on loopback that holds every S3 response back for `delay` seconds while slow."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay, self.slow = target_port, delay, False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # S3 is down: hang up, as a load balancer in front of it would
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, responses: bool) -> None:
        try:
            while data := source.recv(65536):
                if responses and self.slow:
                    time.sleep(self.delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, reference_model_dir):
    """A server reading S3 through a proxy that can be made slow, and an S3 that can be stopped."""
    workdir = tmp_path_factory.mktemp("s3")
    with SeaweedS3(workdir) as s3:
        s3.put(USER_BUCKET, USER_KEY, SAMPLE_IMAGE.read_bytes())
        s3.put(PRIVATE_BUCKET, "frame.jpg", SAMPLE_IMAGE.read_bytes())
        proxy = SlowProxy(s3.port, delay=5)
        env = dict(s3.env(LIMITED), AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{proxy.port}", S3_READ_TIMEOUT="1",
                   S3_CONNECT_TIMEOUT="1", S3_MAX_ATTEMPTS="2", SAGEMAKER_MODEL_SERVER_WORKERS="1",
                   SAGEMAKER_MODEL_SERVER_TIMEOUT=str(SERVER_TIMEOUT))
        try:
            with ModelServer(model=str(reference_model_dir), port=free_port(), env=env) as server:
                yield {"s3": s3, "proxy": proxy, "url": f"http://127.0.0.1:{server.port}", "workdir": workdir}
        finally:
            proxy.close()


def post(url: str, body: str = BODY) -> tuple[requests.Response, float]:
    start = time.monotonic()
    response = requests.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"},
                             timeout=SAGEMAKER_REALTIME_LIMIT + 30)
    return response, time.monotonic() - start


def test_slow_s3_is_504_and_no_worker_stays_stuck(faulty):
    faulty["proxy"].slow = True
    try:
        response, _ = post(faulty["url"])
    finally:
        faulty["proxy"].slow = False
    assert response.status_code == 504 and "in time" in response.text.splitlines()[0]  # ours, not a server timeout
    assert post(faulty["url"])[0].status_code == 200


def test_s3_down_is_503_and_the_server_recovers(faulty):
    s3 = faulty["s3"]
    s3.stop_process()
    try:
        response, _ = post(faulty["url"])
        assert response.status_code == 503 and "S3 is unavailable" in response.text.splitlines()[0]
        assert requests.get(f"{faulty['url']}/ping", timeout=5).status_code == 200
    finally:
        s3.start()
    statuses = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and statuses[-1:] != [200]:
        statuses.append(post(faulty["url"])[0].status_code)  # SeaweedFS may answer 500s while its volumes return
        time.sleep(statuses[-1] != 200)
    assert statuses[-1] == 200 and set(statuses) <= {200, 502, 503}, statuses


def test_access_denied_by_s3_is_403(faulty):
    """The server's identity may read videoblocks-ml only; S3 itself refuses the other bucket."""
    response, _ = post(faulty["url"], json.dumps({"bucket": PRIVATE_BUCKET, "key": "frame.jpg"}))
    assert response.status_code == 403 and "denied" in response.text.splitlines()[0]
