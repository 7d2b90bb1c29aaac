"""Benchmarks: `make bench` (python -m bench), `python -m bench.gpu`, `make load`."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(results: dict, table: str, path: str) -> None:
    """A benchmark's results as JSON at `path`, and its table on stdout."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2))
    print(table)
    print(f"\n(JSON: {path})")
