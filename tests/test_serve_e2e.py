"""One HTTP contract for both servers: `make serve` (AWS toolkit + TorchServe) and `make serve SERVER=ray`
(Ray Serve behind the DLC's adapter), reading a SeaweedFS S3 on loopback.

The requests are the README's curl commands and the bad-input table, sent to the running server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from helpers import REPO, SAMPLE_IMAGE, USER_BUCKET, USER_KEY
from helpers.bad_inputs import ALLOWED, BAD_INPUTS, MAX_IMAGE_BYTES, assert_one_line_error, upload_bad_objects
from helpers.images import decompression_bomb_png, encode, gradient, jpeg_with_exif
from helpers.matching import unmatched

from localrun.ports import free_port
from localrun.s3server import ADMIN

pytestmark = pytest.mark.ray

STARTUP_TIMEOUT = 180  # TorchServe's model startupTimeout (120 s) or Ray's start, with room
SERVERS = {"torchserve": "localrun.serve", "ray": "localrun.ray_serve"}  # `make serve`, `make serve SERVER=ray`
RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "ray.serve.scripts", "ray.scripts.scripts", "localrun.ray_adapter")


def ray_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        command = " ".join(process.info["cmdline"] or []) + " " + (process.info["name"] or "")
        if any(marker in command for marker in RAY_PROCESSES):
            found.append(process)
    return found


@pytest.fixture(scope="module", params=list(SERVERS))
def server(request, s3_server, reference_model_dir):
    """`python -m localrun.serve --model DIR` or `python -m localrun.ray_serve --model DIR` (what
    `make serve [SERVER=ray] MODEL=DIR` runs) on a read-only model dir; stopped with Ctrl-C."""
    kind = request.param
    module = SERVERS[kind]
    if kind == "ray":
        pytest.importorskip("ray", reason="Ray Serve is not installed in this venv")
    elif importlib.util.find_spec("sagemaker_pytorch_serving_container") is None:
        pytest.skip("the TorchServe toolkit is not installed in this venv")
    port = free_port()
    snapshot = tree_snapshot(reference_model_dir)
    upload_bad_objects(s3_server)
    env = dict(os.environ, **s3_server.env(), ALLOWED_BUCKETS=ALLOWED, MAX_IMAGE_BYTES=str(MAX_IMAGE_BYTES),
               SAGEMAKER_MODEL_SERVER_WORKERS="1", PYTHONUNBUFFERED="1")
    log_dir = Path(tempfile.mkdtemp(prefix="e2e-", dir="/tmp"))  # short: Ray's socket paths live there
    log_path = log_dir / f"{kind}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", module, "--model", str(reference_model_dir),
                                    "--port", str(port), "--log-dir", str(log_dir)],
                                   cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    url = f"http://127.0.0.1:{port}"
    while not answering(url) and time.monotonic() - started < STARTUP_TIMEOUT + 30 and process.poll() is None:
        time.sleep(0.5)
    if not answering(url):
        process.kill()
        pytest.fail(f"server did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
    print(f"\n{kind}: answering after {time.monotonic() - started:.1f} s")
    yield {"kind": kind, "url": url, "snapshot": snapshot, "logs": [log_dir]}
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(120) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"processes left running after Ctrl-C: {alive}"
    if kind == "ray":
        assert ray_processes() == [], "Ray processes left running after Ctrl-C"
    shutil.rmtree(log_dir, ignore_errors=True)


def answering(url: str) -> bool:
    """Ready once the model itself answers: /ping says 200 and a bodiless request gets the handler's 4xx (TorchServe
    answers /ping before its workers have loaded the model, and 404 before the model is registered)."""
    try:
        if requests.get(f"{url}/ping", timeout=5).status_code != 200:
            return False
        status = requests.post(f"{url}/invocations", data=b"", timeout=5).status_code
        return 400 <= status < 500 and status != 404
    except requests.RequestException:
        return False


def server_log(server) -> str:
    """The server's log and, for Ray, every log its processes wrote (the replicas' lines among them)."""
    paths = [p for root in server["logs"] for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()]
    return "\n".join(p.read_text(errors="replace") for p in paths)


def tree_snapshot(root):
    """Every path under root with its mode, size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_mode, p.stat().st_size, p.stat().st_mtime_ns)
            for p in [root, *root.rglob("*")]}


def post(server, body, content_type, accept=None) -> requests.Response:
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    return requests.post(f"{server['url']}/invocations", data=body, headers=headers, timeout=60)


def test_ping_and_cold_start(server):
    assert requests.get(f"{server['url']}/ping", timeout=5).status_code == 200


def test_readme_csv(server):
    # curl localhost:8080/invocations -H "Content-Type: text/csv" -d "videoblocks-ml/K"
    response = post(server, f"{USER_BUCKET}/{USER_KEY}", "text/csv")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    result = response.json()
    assert result["source"] == f"s3://{USER_BUCKET}/{USER_KEY}" and result["detections"]


def test_readme_json(server):
    response = post(server, json.dumps({"bucket": USER_BUCKET, "key": USER_KEY}), "application/json")
    assert response.status_code == 200 and response.json()["detections"]


def test_readme_json_with_thresholds(server):
    body = json.dumps({"bucket": USER_BUCKET, "key": USER_KEY, "pred_threshold": 0.01, "iou_threshold": 0.6})
    response = post(server, body, "application/json")
    assert response.status_code == 200
    result = response.json()
    assert (result["pred_threshold"], result["iou_threshold"]) == (0.01, 0.6) and result["detections"]


@pytest.mark.parametrize("field", ["pred_threshold", "iou_threshold"])
def test_readme_threshold_10_is_400(server, field):
    response = post(server, json.dumps({"bucket": USER_BUCKET, "key": USER_KEY, field: 10}), "application/json")
    assert response.status_code == 400 and field in response.text.splitlines()[0]


def test_raw_image_bytes(server):
    response = post(server, SAMPLE_IMAGE.read_bytes(), "image/jpeg")
    assert response.status_code == 200 and response.json()["source"] is None


def test_missing_key_is_404(server):
    response = post(server, f"{USER_BUCKET}/no/such/frame.jpg", "text/csv")
    assert response.status_code == 404 and "does not exist" in response.text


def test_forbidden_bucket_is_403(server):
    response = post(server, json.dumps({"bucket": "another-teams-bucket", "key": USER_KEY}), "application/json")
    assert response.status_code == 403 and "ALLOWED_BUCKETS" in response.text


def test_unsupported_content_type_is_415(server):
    response = post(server, "hello", "text/plain")
    assert response.status_code == 415


def test_several_images_csv(server):
    body = "\n".join([f"{USER_BUCKET}/{USER_KEY}", f"s3://{USER_BUCKET}/{USER_KEY}"])
    response = post(server, body, "text/csv")
    assert response.status_code == 200
    assert [r["source"] for r in response.json()] == [f"s3://{USER_BUCKET}/{USER_KEY}"] * 2


def test_several_images_json_lines(server):
    lines = "\n".join(json.dumps({"bucket": USER_BUCKET, "key": key}) for key in (USER_KEY, "missing.jpg", USER_KEY))
    response = post(server, lines, "application/jsonlines", accept="application/jsonlines")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/jsonlines")
    results = [json.loads(line) for line in response.text.splitlines()]
    assert [("error" in r) for r in results] == [False, True, False]
    assert results[1]["error"]["status"] == 404


def test_model_dir_stays_read_only_and_untouched(server, reference_model_dir):
    assert all(not mode & 0o222 for mode, _, _ in server["snapshot"].values())
    assert post(server, f"{USER_BUCKET}/{USER_KEY}", "text/csv").status_code == 200
    assert tree_snapshot(reference_model_dir) == server["snapshot"]


def test_sixteen_images_in_one_json_lines_request(server, s3_server):
    keys = [f"frames/video-16/{i:04d}.jpg" for i in range(16)]
    for key in keys:
        s3_server.put(USER_BUCKET, key, SAMPLE_IMAGE.read_bytes())
    lines = [json.dumps({"bucket": USER_BUCKET, "key": key}) for key in keys]
    response = post(server, "\n".join(lines), "application/jsonlines", accept="application/jsonlines")
    assert response.status_code == 200
    batched = [json.loads(line) for line in response.text.splitlines()]
    assert [r["source"] for r in batched] == [f"s3://{USER_BUCKET}/{k}" for k in keys]
    singles = [post(server, line, "application/json").json() for line in lines]
    for one, many in zip(singles, batched):
        assert unmatched(one["detections"], many["detections"], one["width"], one["height"]) == []
    lines[5] = json.dumps({"bucket": USER_BUCKET, "key": "frames/video-16/missing.jpg"})
    response = post(server, "\n".join(lines), "application/jsonlines", accept="application/jsonlines")
    results = [json.loads(line) for line in response.text.splitlines()]
    assert response.status_code == 200 and len(results) == 16
    assert [i for i, r in enumerate(results) if "error" in r] == [5] and results[5]["error"]["status"] == 404


def test_execution_parameters_are_not_served(server):
    """Batch Transform asks GET /execution-parameters; TorchServe (and the Ray image's adapter) answer 404
    before any handler code runs, so the job's own settings apply (the deploy CLI sets them; see the README)."""
    response = requests.get(f"{server['url']}/execution-parameters", timeout=5)
    assert response.status_code == 404


HTTP_ONLY_BAD_INPUTS = [
    # sent as botocore's HTTP client (urllib3) sends it, no Expect header: TorchServe answers 413 once it has read the
    # Content-Length, with an empty body, and closes the connection; the client still reads the status
    ("body-over-torchserve-limit", b"x" * 7_000_000, "image/jpeg", 413),
    ("png-decompression-bomb", decompression_bomb_png(), "image/png", 413),
]


ANSWERS_SEEN: dict[str, tuple] = {}  # bad-input case → (status, Content-Type, body) from the first server that answered it


@pytest.mark.parametrize("case, payload, content_type, accept, status, words", BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_over_http(server, case, payload, content_type, accept, status, words):
    """Each row of the bad-input table: its status, and one line of text/plain without a traceback, the same
    status, Content-Type and body from both servers (compared when the second one runs)."""
    response = post(server, payload, content_type, accept)
    assert response.status_code == status, response.text[:300]
    assert words in response.text.splitlines()[0]
    assert_one_line_error(response.text, response.headers.get("Content-Type"))
    answer = (response.status_code, response.headers.get("Content-Type"), response.text)
    assert ANSWERS_SEEN.setdefault(case, answer) == answer


@pytest.mark.parametrize("payload, content_type, status", [c[1:] for c in HTTP_ONLY_BAD_INPUTS],
                         ids=[c[0] for c in HTTP_ONLY_BAD_INPUTS])
def test_oversized_bodies_and_bombs(server, payload, content_type, status):
    assert post(server, payload, content_type).status_code == status


def test_a_body_over_the_request_size_limit_gets_413_before_it_is_sent_when_the_client_asks(server):
    """`curl --data-binary` sends `Expect: 100-continue` for bodies over 1 MB and waits: TorchServe answers 413
    without reading the body; Ray Serve says 100 Continue, reads it and answers 413."""
    host, port = server["url"].removeprefix("http://").split(":")
    size = 7_000_000
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(f"POST /invocations HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
                           f"Content-Length: {size}\r\nExpect: 100-continue\r\n\r\n".encode())
        reader = connection.makefile("rb")
        status = reader.readline().split()[1]
        if status == b"100":
            while reader.readline() not in (b"\r\n", b""):
                pass
            connection.sendall(b"x" * size)
            status = reader.readline().split()[1]
    assert status == b"413"


def test_jpeg_with_a_huge_exif_block_is_detected(server):
    response = post(server, jpeg_with_exif(60_000), "image/jpeg")
    assert response.status_code == 200 and response.json()["width"] == 320


def test_still_serving_after_bad_input_and_no_credentials_in_logs(server):
    assert requests.get(f"{server['url']}/ping", timeout=5).status_code == 200
    assert post(server, encode(gradient(), "PNG"), "image/png").status_code == 200
    log = server_log(server)
    assert "detected status=200 images=" in log
    assert ADMIN[1] not in log and ADMIN[0] not in log


def test_concurrent_single_image_requests_get_their_sequential_answers(server, s3_server):
    """16 clients at once, each its own frame and options: every answer is the one it gets alone; a bad
    image among them gets its own 404 and fails nobody else."""
    keys = [f"frames/video-c/{i:04d}.jpg" for i in range(16)]
    for key in keys:
        s3_server.put(USER_BUCKET, key, SAMPLE_IMAGE.read_bytes())
    bodies = [json.dumps({"bucket": USER_BUCKET, "key": key, "pred_threshold": 0.2 + i / 100})
              for i, key in enumerate(keys)]
    bodies[7] = json.dumps({"bucket": USER_BUCKET, "key": "frames/video-c/missing.jpg"})
    sequential = [post(server, body, "application/json") for body in bodies]
    with ThreadPoolExecutor(16) as clients:
        concurrent = list(clients.map(lambda body: post(server, body, "application/json"), bodies))
    assert [r.status_code for r in concurrent] == [r.status_code for r in sequential] == [200] * 7 + [404] + [200] * 8
    for alone, together in zip(sequential, concurrent):
        if alone.status_code == 200:
            one, other = alone.json(), together.json()
            assert (one["source"], one["pred_threshold"]) == (other["source"], other["pred_threshold"])
            assert unmatched(one["detections"], other["detections"], one["width"], one["height"]) == []


def test_ray_serves_the_archive_config_with_autoscaling(server):
    """config.yaml's autoscaling_config reached Ray Serve: its controller scales the replicas (1..1 here, where the
    suite sets SAGEMAKER_MODEL_SERVER_WORKERS=1)."""
    if server["kind"] != "ray":
        pytest.skip("TorchServe's workers are a fixed count")
    log = server_log(server)
    assert "replicas: autoscaling 1..1, 1 at start" in log
    assert "Registering autoscaling state for deployment Deployment(name='EfficientDet'" in log


def test_ray_merges_concurrent_requests_into_one_forward_pass(server):
    if server["kind"] != "ray":
        pytest.skip("TorchServe runs the toolkit's handler once per request: no merging across requests")
    with ThreadPoolExecutor(16) as clients:
        statuses = list(clients.map(lambda _: post(server, SAMPLE_IMAGE.read_bytes(), "image/jpeg").status_code,
                                    range(16)))
    assert statuses == [200] * 16
    sizes = [int(size) for size in re.findall(r"request batch: images=(\d+)", server_log(server))]
    assert sizes and max(sizes) > 1, sizes


def test_custom_attributes_and_formats_over_http(server):
    """The header reaches the handler on both images (TorchServe's context, the Ray adapter's forwarding)."""
    attributes = {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "pred_threshold=0.01,max_detections=3"}
    response = requests.post(f"{server['url']}/invocations", data=SAMPLE_IMAGE.read_bytes(), headers=attributes, timeout=60)
    assert response.status_code == 200
    assert response.json()["pred_threshold"] == 0.01 and len(response.json()["detections"]) == 3
    formatted = requests.post(f"{server['url']}/invocations", data=SAMPLE_IMAGE.read_bytes(), timeout=60,
                              headers=dict(attributes, Accept="application/json; format=sagemaker-object-detection"))
    assert formatted.status_code == 200 and len(formatted.json()["prediction"]) == 3
    bad = requests.post(f"{server['url']}/invocations", data=SAMPLE_IMAGE.read_bytes(), timeout=60,
                        headers=dict(attributes, **{"X-Amzn-SageMaker-Custom-Attributes": "max_detections=0"}))
    assert bad.status_code == 400 and "max_detections" in bad.text.splitlines()[0]


def test_a_clips_label_segments_over_http(server, tmp_path):
    """A clip whose content changes at known times: the labels' segments in our shape and in Rekognition's
    GetLabelDetection SEGMENTS shape (botocore's model), alike on both servers."""
    from helpers.clips import changing_clip, require_ffmpeg, steady_segments
    from helpers.rekognition import get_label_detection_errors

    require_ffmpeg()
    clip = changing_clip(tmp_path).read_bytes()
    headers = {"Content-Type": "video/mp4", "X-Amzn-SageMaker-Custom-Attributes": "sample_fps=2,aggregate=both"}
    ours = requests.post(f"{server['url']}/invocations", data=clip, headers=headers, timeout=60)
    assert ours.status_code == 200, ours.text[:300]
    segments = steady_segments(ours.json(), 0.5)
    assert segments and set(map(tuple, segments.values())) == {((0.0, 3.0), (6.0, 9.0))}
    headers |= {"Accept": "application/json; format=rekognition",
                "X-Amzn-SageMaker-Custom-Attributes": "sample_fps=2,aggregate=segments,sort_by=name"}
    theirs = requests.post(f"{server['url']}/invocations", data=clip, headers=headers, timeout=60).json()
    assert get_label_detection_errors(theirs) == "" and theirs["GetRequestMetadata"]["SortBy"] == "NAME"
    spans = {(item["Label"]["Name"], item["StartTimestampMillis"], item["EndTimestampMillis"]) for item in theirs["Labels"]}
    assert {(label, start, end) for label in segments for start, end in ((0, 3000), (6000, 9000))} <= spans
