"""(b) the real served stack with S3 on loopback, single-image and batched requests at concurrency 1 and 4, and (c)
its cold start."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from localrun.ports import free_port
from localrun.s3server import SeaweedS3
from localrun.serve import ModelServer

from .samples import SAMPLE
from .timing import timed_load

REPO = Path(__file__).resolve().parents[1]
BUCKET = "videoblocks-ml"
KEY_PREFIX = "bench/frame-"


def bench_server(coef: int, checkpoint: str | None, rounds: int, batch: int) -> dict:
    """(b) end to end through the real server and S3 on loopback; (c) its cold start."""
    out: dict = {}
    with SeaweedS3() as s3:
        data = SAMPLE.read_bytes()
        keys = [f"{KEY_PREFIX}{i:03d}.jpg" for i in range(batch)]
        for key in keys:
            s3.put(BUCKET, key, data)
        port = free_port()
        with ModelServer(coef=coef, port=port, weights=checkpoint, env=s3.env(),
                         log_path=REPO / "build" / "bench" / "server.log") as server:
            out["cold_start"] = {"ping_s": server.ping_seconds, "model_loaded_s": server.ready_seconds}
            url = f"http://127.0.0.1:{port}/invocations"

            def single(i: int) -> int:
                body = json.dumps({"bucket": BUCKET, "key": keys[i % batch]})
                response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120)
                response.raise_for_status()
                return 1

            def batched(_: int) -> int:
                body = "\n".join(json.dumps({"bucket": BUCKET, "key": k}) for k in keys)
                response = requests.post(url, data=body, headers={"Content-Type": "application/jsonlines"}, timeout=300)
                response.raise_for_status()
                return batch

            for name, call, requests_per_round in (("single-image", single, batch), (f"batched ({batch}/request)", batched, 1)):
                for concurrency in (1, 4):
                    call(0)
                    out[f"{name}, concurrency {concurrency}"] = timed_load(call, rounds * requests_per_round,
                                                                           concurrency)
    rows = {k: v["images_per_s"] for k, v in out.items() if isinstance(v, dict) and "images_per_s" in v}
    single = {k.rsplit(" ", 1)[1]: v for k, v in rows.items() if k.startswith("single")}
    batched = {k.rsplit(" ", 1)[1]: v for k, v in rows.items() if k.startswith("batched")}
    out["batched_over_single_throughput"] = {
        **{f"concurrency {c}": batched[c] / single[c] for c in single},
        "best over best": max(batched.values()) / max(single.values()),
    }
    return out


def served_markdown(server: dict) -> list[str]:
    lines = ["", "| served endpoint (S3 on loopback) | request p50 ms | request p95 ms | images/s |", "| --- | --- | --- | --- |"]
    for name, row in server.items():
        if isinstance(row, dict) and "images_per_s" in row:
            lines.append(f"| {name} | {row['request_p50_ms']:.0f} | {row['request_p95_ms']:.0f} | {row['images_per_s']:.2f} |")
    for name, ratio in server["batched_over_single_throughput"].items():
        lines.append(f"| **batched ÷ single-image throughput, {name}** | | | **{ratio:.2f}×** |")
    cold = server["cold_start"]
    lines += ["", f"Cold start: /ping answers 200 after {cold['ping_s']:.1f} s, the model is loaded after "
                  f"{cold['model_loaded_s']:.1f} s (warm-up included)."]
    return lines
