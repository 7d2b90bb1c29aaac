"""Benchmarks: `make bench` (python -m bench), `python -m bench.gpu`, `make load`."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

CPU_INFO = Path("/proc/cpuinfo")


def cpu_name() -> str:
    """The CPU's model name, family and model (a virtual machine may show only "AMD EPYC": the family and model
    say which generation), and the widest instruction set torch's CPU kernels use."""
    fields: dict[str, str] = {}
    if CPU_INFO.is_file():
        for line in CPU_INFO.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break
    name = fields.get("model name") or platform.processor() or platform.machine()
    generation = f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields else ""
    extras = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in fields.get("flags", "").split()]
    return f"{name}{generation}, {torch.backends.cpu.get_cpu_capability()}" + "".join(f", {e}" for e in extras)


def cpu_machine() -> str:
    """The CPU benchmarks' machine line: CPU, cores, torch and its threads."""
    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def write_json(results: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2))


def write_report(results: dict, table: str, path: str) -> None:
    """A benchmark's results as JSON at `path`, and its table on stdout."""
    write_json(results, path)
    print(table)
    print(f"\n(JSON: {path})")


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """These environment variables set while inside, restored (or removed) after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
