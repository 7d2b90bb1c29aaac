"""`make load`: a bounded load test of the served stack (S3 on loopback), mixed valid and invalid requests.

Checks that every response has the status its request calls for, that every valid response carries
detections for its image, and that the workers' resident memory after warm-up grows by less than 10 %.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import requests

from localrun.ports import free_port
from localrun.s3server import SeaweedS3
from localrun.serve import ModelServer

from .__main__ import REPO
from .samples import SAMPLE, default_checkpoint

BUCKET, KEY = "videoblocks-ml", "load/frame.jpg"
CASES = [  # (content type, body, expected status)
    ("application/json", json.dumps({"bucket": BUCKET, "key": KEY}), 200),
    ("text/csv", f"{BUCKET}/{KEY}", 200),
    ("application/json", json.dumps({"bucket": BUCKET, "key": KEY, "pred_threshold": 0.5}), 200),
    ("application/json", json.dumps({"bucket": BUCKET, "key": KEY, "pred_threshold": 10}), 400),
    ("application/json", json.dumps({"bucket": BUCKET, "key": "load/missing.jpg"}), 404),
    ("application/json", json.dumps({"bucket": "not-allowed", "key": KEY}), 403),
    ("text/plain", "hello", 415),
    ("application/json", "{not json", 400),
]


def worker_memory(server: ModelServer) -> int:
    """Resident bytes of the model server's Python workers."""
    total = 0
    for process in psutil.process_iter():  # TorchServe's Java process is re-parented: look by process group
        try:
            if os.getpgid(process.pid) == server.process.pid and "model_service_worker" in " ".join(process.cmdline()):
                total += process.memory_info().rss
        except (psutil.Error, OSError):
            continue
    if not total:
        raise RuntimeError("found no model server workers to measure")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args(argv)
    with SeaweedS3() as s3:
        s3.put(BUCKET, KEY, SAMPLE.read_bytes())
        env = dict(s3.env(), ALLOWED_BUCKETS=BUCKET)
        with ModelServer(port=free_port(), weights=default_checkpoint(0), env=env,
                         log_path=REPO / "build" / "load" / "server.log") as server:
            url = f"http://127.0.0.1:{server.port}/invocations"
            def send(case):
                content_type, body, expected = case
                start = time.perf_counter()
                response = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=120)
                seconds = time.perf_counter() - start
                ok = response.status_code == expected
                if ok and expected == 200:
                    ok = response.json()["source"] == f"s3://{BUCKET}/{KEY}" and "detections" in response.json()
                return expected, response.status_code, ok, seconds

            cases = list(itertools.islice(itertools.cycle(CASES), args.requests + args.warmup))
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(send, cases[:args.warmup]))
                memory_before = worker_memory(server)
                start = time.perf_counter()
                results = list(pool.map(send, cases[args.warmup:]))
                elapsed = time.perf_counter() - start
            memory_after = worker_memory(server)
    wrong = [(e, s) for e, s, ok, _ in results if not ok]
    latencies = [t for *_, t in results]
    growth = (memory_after - memory_before) / memory_before
    report = {
        "requests": len(results), "clients": args.clients, "unexpected": len(wrong),
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 1),
        "requests_per_s": round(len(results) / elapsed, 2),
        "worker_rss_mb_after_warmup": round(memory_before / 2**20, 1),
        "worker_rss_mb_at_end": round(memory_after / 2**20, 1),
        "rss_growth_percent": round(100 * growth, 2),
    }
    print(json.dumps(report, indent=2))
    if wrong:
        print(f"unexpected statuses (expected, got): {wrong[:10]}", file=sys.stderr)
    return 0 if not wrong and growth < 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
