"""Both AWS images' servers side by side: single-image requests at concurrency 1, 4 and 16 against the
TorchServe stack and the Ray Serve stack, S3 on loopback, and the batch sizes Ray actually formed."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import requests

from localrun.ports import free_port
from localrun.ray_serve import RayServer
from localrun.s3server import SeaweedS3
from localrun.serve import ModelServer

from .timing import timed_load

CONCURRENCY = (1, 4, 16)
BUCKET, KEY = "videoblocks-ml", "bench/servers/frame.jpg"
BATCH_LINE = re.compile(r"request batch: images=(\d+)")
LOGS = Path(__file__).resolve().parents[1] / "build" / "bench"


def timed_requests(url: str, count: int, concurrency: int) -> dict:
    """`count` single-image JSON requests for the bench frame from `concurrency` clients."""
    body = json.dumps({"bucket": BUCKET, "key": KEY})

    def one(_: int) -> int:
        response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=300)
        response.raise_for_status()
        return 1

    return timed_load(one, count, concurrency)


def bench_servers(coef: int, checkpoint: str | None, rounds: int, sample: bytes) -> dict:
    """For each server: rounds × concurrency requests per concurrency level (after a warm-up round)."""
    out: dict = {}
    with SeaweedS3() as s3:
        s3.put(BUCKET, KEY, sample)
        for name, server_class in (("TorchServe (PyTorch DLC 2.6)", ModelServer), ("Ray Serve (Ray DLC)", RayServer)):
            port = free_port()
            log_path = LOGS / f"servers-{server_class.__name__}.log"
            with server_class(coef=coef, port=port, weights=checkpoint, env=s3.env(), log_path=log_path) as server:
                url = f"http://127.0.0.1:{port}/invocations"
                rows = {}
                for concurrency in CONCURRENCY:
                    timed_requests(url, concurrency, concurrency)  # warm-up
                    rows[f"concurrency {concurrency}"] = timed_requests(url, rounds * concurrency, concurrency)
                if isinstance(server, RayServer):
                    sizes = Counter(int(n) for n in BATCH_LINE.findall(server.replica_logs()))
                    rows["forward passes by images"] = dict(sorted(sizes.items()))
                out[name] = rows
    return out


def servers_markdown(servers: dict) -> list[str]:
    lines = ["", "| single-image requests (S3 on loopback) | concurrency | request p50 ms | request p95 ms | images/s |",
             "| --- | --- | --- | --- | --- |"]
    for name, rows in servers.items():
        for level, row in rows.items():
            if "images_per_s" in row:
                lines.append(f"| {name} | {level.split()[-1]} | {row['request_p50_ms']:.0f} | "
                             f"{row['request_p95_ms']:.0f} | {row['images_per_s']:.2f} |")
    names = list(servers)
    for level in (f"concurrency {c}" for c in CONCURRENCY):
        ratio = servers[names[1]][level]["images_per_s"] / servers[names[0]][level]["images_per_s"]
        lines.append(f"| **{names[1]} ÷ {names[0]} throughput** | {level.split()[-1]} | | | **{ratio:.2f}×** |")
    formed = servers[names[1]].get("forward passes by images", {})
    lines += ["", "Ray Serve's forward passes by images per pass (single-image requests merged across clients): "
              + ", ".join(f"{n} image{'s' if int(n) > 1 else ''}: {count}" for n, count in formed.items()) + "."]
    return lines
