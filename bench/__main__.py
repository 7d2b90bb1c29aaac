"""`make bench`: fast against plain eager path per image, the served endpoint, both servers, cold start, reduced JPEG
decode, video, and ours against ONNX Runtime and OpenVINO.

Modes are timed side by side in one run, interleaved, and reported as ratios: these machines are
shared and noisy, so absolute numbers move between runs more than ratios do. Each part is a module of its own:
latency.py (a), served.py (b, c), servers.py (b′), decoding.py (d, e), video.py (f), runtimes.py (g).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from efficientdet import get_config

from . import cpu_machine, write_report
from .decoding import bench_letterbox, bench_reduced_decode, decoding_markdown
from .latency import bench_latency, bench_model, detectors, latency_markdown
from .runtimes import bench_runtimes, runtimes_markdown
from .samples import SAMPLE, default_checkpoint
from .served import bench_server, served_markdown
from .servers import bench_servers, servers_markdown
from .video import bench_video, video_markdown

REPO = Path(__file__).resolve().parents[1]


def markdown(results: dict) -> str:
    lines = latency_markdown(results)
    if results.get("server"):
        lines += served_markdown(results["server"])
    if results.get("servers"):
        lines += servers_markdown(results["servers"])
    if results.get("runtimes"):
        lines += runtimes_markdown(results["runtimes"], results["machine"])
    lines += decoding_markdown(results)
    if results.get("video"):
        lines += video_markdown(results["video"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--coef", type=int, choices=range(9), default=0)
    parser.add_argument("--checkpoint", help="checkpoint to time (default: weights/, else for D0 the reference "
                                             "fixture, else generated untrained weights)")
    parser.add_argument("--untrained", action="store_true", help="time generated untrained weights, whatever is in weights/")
    parser.add_argument("--rounds", type=int, default=30, help="timed images per mode")
    parser.add_argument("--rounds-extras", type=int, default=15, help="timed frames per opt-in mode (0: skip)")
    parser.add_argument("--server-rounds", type=int, default=8, help="rounds of requests per server mode")
    parser.add_argument("--batch", type=int, default=8, help="images per batched forward pass and request")
    parser.add_argument("--runtime-rounds", type=int, default=12,
                        help="rounds of (g), ours against ONNX Runtime and OpenVINO (0: skip)")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--skip-servers", action="store_true", help="skip TorchServe against Ray Serve")
    parser.add_argument("--video-seconds", type=int, default=60,
                        help="length of (f)'s 1080p clips; its long clip lasts ten times as long (0: skip)")
    parser.add_argument("--video-rounds", type=int, default=2, help="interleaved rounds of (f)'s PyAV ÷ OpenCV")
    parser.add_argument("--json", default=str(REPO / "build" / "bench" / "results.json"))
    args = parser.parse_args(argv)
    if args.untrained and args.checkpoint:
        parser.error("--untrained and --checkpoint exclude each other")
    args.checkpoint = None if args.untrained else args.checkpoint or default_checkpoint(args.coef)
    image = np.asarray(Image.open(SAMPLE).convert("RGB"))
    model = bench_model(args.coef, args.checkpoint)
    modes = detectors(model)
    results = {"machine": cpu_machine(), "coef": args.coef, "input_size": get_config(args.coef).input_size,
               "checkpoint": args.checkpoint, "latency": bench_latency(modes, args.rounds, image, args.batch)}
    if args.runtime_rounds:
        results["runtimes"] = bench_runtimes(model, image, args.runtime_rounds)
    if args.rounds_extras:
        results["reduced_decode"] = bench_reduced_decode(modes["fast"], args.rounds_extras)
        results["letterbox"] = bench_letterbox(modes["fast"].input_size, 4 * args.rounds_extras)
    if args.video_seconds:
        results["video"] = bench_video(model, args.video_seconds, rounds=args.video_rounds)
    if not args.skip_server:
        results["server"] = bench_server(args.coef, args.checkpoint, args.server_rounds, args.batch)
    if not args.skip_server and not args.skip_servers:
        results["servers"] = bench_servers(args.coef, args.checkpoint, args.server_rounds, SAMPLE.read_bytes())
    write_report(results, markdown(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
