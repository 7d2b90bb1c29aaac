"""Timing many calls from several clients at once: the server parts of `make bench` share it."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def p50_p95_ms(seconds: list[float]) -> dict:
    return {"p50_ms": 1000 * percentile(seconds, 50), "p95_ms": 1000 * percentile(seconds, 95)}


def timed_load(call: Callable[[int], int], count: int, concurrency: int) -> dict:
    """Request p50/p95 in ms and images per second for `count` calls (each returns the images it answered)
    from `concurrency` clients."""
    latencies: list[float] = []

    def timed(i: int) -> int:
        start = time.perf_counter()
        images = call(i)
        latencies.append(time.perf_counter() - start)
        return images

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        images = sum(pool.map(timed, range(count)))
    elapsed = time.perf_counter() - start
    return {"request_p50_ms": 1000 * percentile(latencies, 50), "request_p95_ms": 1000 * percentile(latencies, 95),
            "images_per_s": images / elapsed}
