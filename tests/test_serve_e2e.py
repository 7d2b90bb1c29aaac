"""`make serve`'s stack (AWS toolkit + TorchServe) over HTTP, reading a SeaweedFS S3 on loopback.

The requests are the README's curl commands, sent to the running server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests
from bad_inputs import ALLOWED, BAD_INPUTS, MAX_IMAGE_BYTES, upload_bad_objects
from conftest import REPO, SAMPLE_IMAGE, USER_BUCKET, USER_KEY
from images import decompression_bomb_png, encode, gradient, jpeg_with_exif
from matching import unmatched

from localrun.ports import free_port
from localrun.s3server import ADMIN

STARTUP_TIMEOUT = 120  # TorchServe's default model startupTimeout, as /models reports it


@pytest.fixture(scope="module")
def server(s3_server, reference_model_dir):
    """`python -m localrun.serve --model DIR` (what `make serve MODEL=DIR` runs) on a read-only model dir."""
    port = free_port()
    snapshot = tree_snapshot(reference_model_dir)
    upload_bad_objects(s3_server)
    env = dict(os.environ, **s3_server.env(), ALLOWED_BUCKETS=ALLOWED, MAX_IMAGE_BYTES=str(MAX_IMAGE_BYTES),
               SAGEMAKER_MODEL_SERVER_WORKERS="1", PYTHONUNBUFFERED="1")
    log_path = reference_model_dir.parent / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "localrun.serve", "--model", str(reference_model_dir),
                                    "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_TIMEOUT + 30
    ready = None
    while ready is None and time.monotonic() < deadline and process.poll() is None:
        ready = re.search(rb"cold start: /ping after ([\d.]+) s, model loaded after ([\d.]+) s", log_path.read_bytes())
        time.sleep(0.5)
    if ready is None:
        process.kill()
        pytest.fail(f"server did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
    ping, loaded = float(ready.group(1)), float(ready.group(2))
    print(f"\ncold start: /ping 200 after {ping:.1f} s, model loaded after {loaded:.1f} s")
    yield {"url": f"http://127.0.0.1:{port}", "ping": ping, "loaded": loaded, "snapshot": snapshot, "log": log_path}
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(60) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"processes left running after Ctrl-C: {alive}"


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
    """Batch Transform asks GET /execution-parameters; TorchServe answers 404 before any handler code runs,
    so the job's own settings apply (the deploy CLI sets them; see the README)."""
    response = requests.get(f"{server['url']}/execution-parameters", timeout=5)
    assert response.status_code == 404


HTTP_ONLY_BAD_INPUTS = [
    ("body-over-torchserve-limit", b"x" * 7_000_000, "image/jpeg", 413),
    ("png-decompression-bomb", decompression_bomb_png(), "image/png", 413),
]


@pytest.mark.parametrize("payload, content_type, accept, status, words",
                         [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_over_http(server, payload, content_type, accept, status, words):
    response = post(server, payload, content_type, accept)
    assert response.status_code == status, response.text[:300]
    assert words in response.text.splitlines()[0]


@pytest.mark.parametrize("payload, content_type, status", [c[1:] for c in HTTP_ONLY_BAD_INPUTS],
                         ids=[c[0] for c in HTTP_ONLY_BAD_INPUTS])
def test_oversized_bodies_and_bombs(server, payload, content_type, status):
    assert post(server, payload, content_type).status_code == status


def test_jpeg_with_a_huge_exif_block_is_detected(server):
    response = post(server, jpeg_with_exif(60_000), "image/jpeg")
    assert response.status_code == 200 and response.json()["width"] == 320


def test_still_serving_after_bad_input_and_no_credentials_in_logs(server):
    assert requests.get(f"{server['url']}/ping", timeout=5).status_code == 200
    assert post(server, encode(gradient(), "PNG"), "image/png").status_code == 200
    log = server["log"].read_text(errors="replace")
    assert "detected status=200 images=" in log
    assert ADMIN[1] not in log and ADMIN[0] not in log
