"""`make bench` runs and reports its ratios (the numbers themselves are the README's, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO

pytestmark = pytest.mark.dev


def run_bench(tmp_path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--skip-server", "--json", str(out), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(out.read_text())


def test_bench_compares_fast_and_plain_and_the_reduced_decode(reference, tmp_path):
    table, results = run_bench(tmp_path, "--checkpoint", str(reference / "efficientdet-d0.pth"), "--rounds", "2",
                               "--rounds-extras", "1", "--video-seconds", "2", "--video-rounds", "1", "--runtime-rounds", "1")
    assert "fast ÷ plain (p50)" in table and "3840x2160 frame" in table
    if results["video"] is not None:  # None where ffmpeg is missing (make test installs it)
        rows = results["video"]["rows"]
        assert rows["1080p H.264 10 Mb/s, sample_fps=1"]["frames"] == 2 and "today's OpenCV decoder" in table
        assert set(rows["1080p H.264 10 Mb/s, sample_fps=1"]["stages_s"]) >= {"decode", "network"}
        camera = rows["1080p H.264 10 Mb/s, camera GOP (IBBP), sample_fps=1"]
        assert camera["frames"] == 2 and camera["opencv_seconds"] > 0
        assert rows["ProRes 422 HQ 1080p25 master from S3, sample_fps=1"]["read_share"] < 1
        assert not any(row["error"] for row in rows.values())
        # as a served worker runs a clip by default: every core busy, on parallel passes of its worker's threads
        assert results["video"]["parallel"] * results["video"]["threads"] == os.cpu_count() and "served worker" in table
    assert set(results["latency"]["fast"]["stages_p50_ms"]) == {"preprocess", "network", "nms"}
    assert results["checkpoint"].endswith("efficientdet-d0.pth") and results["latency"]["speedup_p50"] > 0
    assert set(results["reduced_decode"]) == {"1920x1080", "3840x2160"}
    runtimes = results["runtimes"]
    assert set(runtimes["float32"]["network_p50_ms"]) == {"ours (fast path)", "ONNX Runtime", "OpenVINO"}
    assert "| float32 | ONNX Runtime |" in table and "| float32 | OpenVINO |" in table
    assert ("bfloat16" in runtimes) == ("| bfloat16 | OpenVINO |" in table)
    assert set(runtimes["fixed_cost"]["network_p50_ms"]) == set(runtimes["float32"]["network_p50_ms"])
    assert "alone at 128 px" in table and isinstance(runtimes["fixed_cost"]["ours_as_graph"], bool)


def test_bench_serves_a_commit_beside_the_working_tree(reference, tmp_path):
    """`python -m bench.against_commit`: both checkouts' servers answer every clip request (here HEAD, short clips)."""
    out = tmp_path / "against.json"
    result = subprocess.run([sys.executable, "-m", "bench.against_commit", "HEAD", "--seconds", "2", "--rounds", "1",
                             "--requests", "1", "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    times = json.loads(out.read_text())["times"]
    rows = [row for side in times.values() for clip in side.values() for row in clip]
    assert len(rows) == 4 and all(row["status"] == 200 and row["frames"] == 2 for row in rows)
    assert "commit ÷ working tree" in result.stdout


def test_bench_times_any_coefficient(tmp_path):
    table, results = run_bench(tmp_path, "--coef", "1", "--untrained", "--rounds", "1", "--rounds-extras", "0",
                               "--video-seconds", "0", "--runtime-rounds", "0")
    assert (results["coef"], results["input_size"], results["checkpoint"]) == (1, 640, None)
    assert "untrained weights" in table


def test_gpu_bench_runs_without_a_server_or_s3(reference, tmp_path):
    """`python -m bench.gpu` on CPU: the script's smoke test (its numbers are for a GPU)."""
    out = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, "-m", "bench.gpu", "--device", "cpu", "--coefs", "0", "--dtypes", "float32",
                             "--graphs", "off", "--batch-sizes", "1", "2", "--rounds", "1", "--video-seconds", "2",
                             "--json", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    [row] = results["configurations"].values()
    assert set(row["batches"]) == {"1", "2"} and row["realtime"]["p50_ms"] > 0
    assert set(row["batches"]["2"]["stages_p50_ms"]) == {"decode", "letterbox", "network", "post-processing"}
    assert set(results["decoders"]) == {"quality 90", "quality 75"}
    assert "CPU-decode detections found again" in result.stdout
    # on CPU "float16" runs float32 and "the device" is the CPU: every comparison finds every detection again,
    # the reference implementation's own among them (the equivalence tests' 1e-4 lies within the rule's 0.01)
    fidelity = results["float16_fidelity"]
    assert "coffee.png (fixtures)" in fidelity and len(fidelity) == 4
    assert all(row["found"] == row["of"] > 0 for rows in fidelity.values() for row in rows.values())
    assert "reference implementation → float16" in fidelity["coffee.png (fixtures)"]
    # (e): two seconds of 1080p at one frame a second, each stage of the service timed
    video = results["video"]
    assert video["frames"] == 2 and not video["error"] and {"decode", "network"} <= set(video["stages_s"])
    assert video["decoders"]["software_frames_per_s"] > 0  # and NVDEC's rate, or why it did not run, beside it
    assert "frames/s" in result.stdout
