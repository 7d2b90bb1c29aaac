"""(f) against an earlier commit, end to end: `python -m bench.against_commit COMMIT` serves that commit's code and
the working tree's through TorchServe (the AWS toolkit, as `make serve` runs it, D0 with the reference fixture),
one server at a time (the toolkit runs one per machine), a fresh one per round, the order alternating; each sends
the two 1080p H.264 clips of (f) (x264's own frame types, and a camera's IBBP GOP) from S3 on loopback at one
frame a second, under default settings. Each checkout runs its own request handling, decoder and network.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from localrun.s3server import SeaweedS3

from . import cpu_machine, write_report
from .samples import REPO, default_checkpoint
from .video import H264_10MBPS, H264_CAMERA_GOP, encoded

BUILD = REPO / "build" / "bench"  # the clips, the servers' logs, the JSON
CLIPS = {"1080p H.264 10 Mb/s": ("h264.mp4", H264_10MBPS),
         "1080p H.264 10 Mb/s, camera GOP (IBBP)": ("camera.mp4", H264_CAMERA_GOP)}
BUCKET = "bench"

# Run in the checkout (its own localrun), so that it needs nothing of this module's commit: a warm-up
# request of two frames, then each clip `rounds` times; one JSON line on stdout.
SERVE_AND_TIME = """
import json, sys, time, urllib.error, urllib.request
from localrun.ports import free_port
from localrun.serve import ModelServer

bucket, keys, rounds, weights, log_path = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6]
port = free_port()

def post(body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, data = error.code, error.read()
    answer = json.loads(data) if status == 200 else {}
    return {"status": status, "seconds": time.perf_counter() - start, "frames": len(answer.get("frames", []))}

with ModelServer(coef=0, port=port, weights=weights, log_path=log_path):
    post({"bucket": bucket, "key": keys[0], "sample_fps": 1, "max_frames": 2})
    print(json.dumps({key: [post({"bucket": bucket, "key": key, "sample_fps": 1}) for _ in range(rounds)]
                      for key in keys}))
"""


def clips(folder: Path, seconds: int) -> dict[str, Path]:
    """(f)'s two H.264 clips, made once per length under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for kind, (name, codec) in CLIPS.items():
        path = folder / f"{seconds}s-{name}"
        if not path.exists():  # encoded under another name first: an interrupted encode is never taken for a clip
            encoded(path.with_name(f"part-{path.name}"), "1920x1080", 30, seconds, codec).rename(path)
        made[kind] = path
    return made


def served_round(checkout: Path, keys: list[str], requests: int, env: dict[str, str], log_path: Path) -> dict:
    """A fresh TorchServe of `checkout`'s code: each key's clip requested `requests` times, {key: [timings]}."""
    result = subprocess.run([sys.executable, "-c", SERVE_AND_TIME, BUCKET, json.dumps(keys), str(requests),
                             default_checkpoint(0) or "", str(log_path)],
                            cwd=checkout, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode:
        raise SystemExit(f"the server of {checkout} failed (see {log_path}): {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def against_commit(commit: str, rounds: int, requests: int, seconds: int) -> dict:
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], cwd=REPO,
                           capture_output=True, text=True)
    if known.returncode:
        raise SystemExit(f"{commit}: not a commit of this repository")
    made = clips(BUILD / "clips", seconds)
    keys = {kind: f"clips/{path.name}" for kind, path in made.items()}
    times: dict[str, dict[str, list[dict]]] = {side: {kind: [] for kind in made} for side in ("commit", "working tree")}
    with tempfile.TemporaryDirectory(prefix="bench-commit-") as folder, SeaweedS3() as s3:
        checkout = Path(folder) / "checkout"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(checkout), commit], cwd=REPO, check=True)
        try:
            client = s3.client()
            client.create_bucket(Bucket=BUCKET)
            for kind, path in made.items():
                client.upload_file(str(path), BUCKET, keys[kind])  # in parts: a 76 MB body may outlast one read
            env = dict(os.environ) | s3.env()
            sides = [("commit", checkout), ("working tree", REPO)]
            for round_ in range(rounds):
                for side, root in sides if round_ % 2 == 0 else reversed(sides):
                    timed = served_round(root, list(keys.values()), requests, env,
                                         BUILD / f"against-commit-{side.replace(' ', '-')}-{round_}.log")
                    for kind in made:
                        times[side][kind] += timed[keys[kind]]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=REPO, check=False)
    return {"machine": cpu_machine(), "commit": commit, "seconds": seconds, "times": times}


def against_commit_markdown(results: dict) -> str:
    lines = [f"Clips at one frame a second through TorchServe, commit {results['commit']} against the working tree, "
             f"{results['seconds']} s of 1080p each, on {results['machine']}:", "",
             "| clip | commit: seconds per request | working tree: seconds per request | commit ÷ working tree "
             "(medians) |", "| --- | --- | --- | --- |"]
    old, new = results["times"]["commit"], results["times"]["working tree"]
    for kind in old:
        if any(row["status"] != 200 for row in old[kind] + new[kind]):
            statuses = sorted({row["status"] for row in old[kind] + new[kind]})
            lines.append(f"| {kind} | statuses {statuses} | | |")
            continue
        medians = [statistics.median(row["seconds"] for row in side[kind]) for side in (old, new)]
        lines.append(f"| {kind} | " + " | ".join(", ".join(f"{row['seconds']:.1f}" for row in side[kind])
                                                 for side in (old, new))
                     + f" | {medians[0] / medians[1]:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.against_commit", description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the commit to serve beside the working tree, e.g. edf54e6")
    parser.add_argument("--rounds", type=int, default=2, help="fresh servers per side, alternating")
    parser.add_argument("--requests", type=int, default=2, help="timed requests per clip and server")
    parser.add_argument("--seconds", type=int, default=60, help="length of the clips")
    parser.add_argument("--json", default=str(BUILD / "against-commit.json"))
    args = parser.parse_args(argv)
    results = against_commit(args.commit, args.rounds, args.requests, args.seconds)
    write_report(results, against_commit_markdown(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
