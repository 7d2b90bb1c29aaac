"""`make demo`: fully offline. SeaweedFS S3 + the real serving stack, the README's curl commands, a picture."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

from PIL import Image

from deploy.model_dir import REPO, local_checkpoint
from detect.draw import draw_detections
from samples.example import BUCKET, KEY, VIDEO_KEY

from .ports import free_port
from .ray_serve import RayServer
from .s3server import SeaweedS3
from .serve import ModelServer

SAMPLE = REPO / "samples" / "coffee.jpg"
SAMPLE_CLIP = REPO / "samples" / "coffee.mp4"  # 2 s of the sample photograph, slowly zoomed: 600×400 H.264
PICTURE = REPO / "build" / "demo" / "detections.png"
SERVER_LOG = REPO / "build" / "demo" / "server.log"

# (what it shows, content type, body, expected status): the README's examples.
EXAMPLES = [
    ("CSV: bucket/key", "text/csv", f"{BUCKET}/{KEY}", 200),
    ("JSON: bucket and key", "application/json", json.dumps({"bucket": BUCKET, "key": KEY}), 200),
    ("JSON with thresholds", "application/json",
     json.dumps({"bucket": BUCKET, "key": KEY, "pred_threshold": 0.01, "iou_threshold": 0.6}), 200),
    ("pred_threshold out of range", "application/json", json.dumps({"bucket": BUCKET, "key": KEY, "pred_threshold": 10}), 400),
    ("iou_threshold out of range", "application/json", json.dumps({"bucket": BUCKET, "key": KEY, "iou_threshold": 10}), 400),
    ("missing key", "text/csv", f"{BUCKET}/no/such/frame.jpg", 404),
    ("JSON: a video, one frame a second", "application/json",
     json.dumps({"bucket": BUCKET, "key": VIDEO_KEY, "sample_fps": 1, "max_detections": 3}), 200),
]


def invoke(port: int, content_type: str, body: str) -> tuple[int, str]:
    """POST /invocations with curl, as the README does (urllib where curl is missing)."""
    url = f"http://localhost:{port}/invocations"
    if shutil.which("curl"):
        print(f"$ curl -s {url} -H 'Content-Type: {content_type}' -d '{body}'")
        result = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", url, "-H", f"Content-Type: {content_type}",
                                 "-d", body], capture_output=True, text=True, timeout=120, check=True)
        text, _, status = result.stdout.rpartition("\n")
        return int(status), text
    request = urllib.request.Request(url, body.encode(), {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrun.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("torchserve", "ray"), default="torchserve",
                        help="the AWS PyTorch inference DLC's TorchServe stack, or the Ray Serve DLC's")
    args = parser.parse_args(argv)
    server_class = RayServer if args.server == "ray" else ModelServer
    failures = 0
    with SeaweedS3() as s3:
        s3.put(BUCKET, KEY, SAMPLE.read_bytes())
        s3.put(BUCKET, VIDEO_KEY, SAMPLE_CLIP.read_bytes())
        print(f"SeaweedFS S3 on {s3.endpoint} holds s3://{BUCKET}/{KEY} and s3://{BUCKET}/{VIDEO_KEY}")
        port = free_port()
        with server_class(coef=0, port=port, env=s3.env(), log_path=SERVER_LOG) as server:
            print(f"{args.server} serving on :{port} (log: {SERVER_LOG}); answering after {server.ready_seconds:.1f} s\n")
            detections = None
            for title, content_type, body, expected in EXAMPLES:
                print(f"# {title} (expect {expected})")
                status, text = invoke(port, content_type, body)
                print(f"HTTP {status}\n{text if status == 200 else text.splitlines()[0]}\n")
                failures += status != expected
                if status == 200 and content_type == "application/json" and "pred_threshold" in body:
                    detections = json.loads(text)["detections"]
    if detections is not None:
        path = draw_detections(Image.open(SAMPLE), detections, PICTURE)
        print(f"wrote {path} ({len(detections)} boxes)")
    if not local_checkpoint(0).exists():
        print("NOTE: served with generated UNTRAINED weights: the boxes are meaningless. "
              "`make weights` fetches the published checkpoint where the network allows.")
    print("demo OK" if failures == 0 else f"demo FAILED: {failures} unexpected status(es)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
