"""Several images per request: batched forward passes, overlapping S3 fetches, the local batch CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import REPO, SAMPLE_IMAGE, USER_BUCKET
from helpers.images import video_frame
from PIL import Image

import request_handling.media
from efficientdet import Detector
from request_handling.bodies import EntryRequest
from request_handling.service import DetectionService
from request_handling.settings import Settings

pytestmark = pytest.mark.dev


@pytest.fixture(scope="module")
def frames(s3_server):
    keys = [f"frames/video-7/{i:04d}.jpg" for i in range(8)]
    for key in keys:
        s3_server.put(USER_BUCKET, key, SAMPLE_IMAGE.read_bytes())
    return keys


def test_one_forward_pass_per_batch_overlapping_fetches_and_passes(reference, s3_server, frames, monkeypatch):
    """Two fetches, and the two batches' forward passes, each meet at a barrier: they can only pass it
    if they run at the same time (no clock involved)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    detector = Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0)
    service = DetectionService(detector, Settings(batch_size=4, s3_max_concurrency=8, parallel_batches=2))
    forwards, fetches, lock = [], [], threading.Lock()
    fetches_meet, passes_meet = threading.Barrier(2, timeout=60), threading.Barrier(2, timeout=60)
    real_forward, real_fetch = detector.forward, request_handling.media.fetch_media

    def meeting_forward(batch):
        with lock:
            forwards.append(batch.shape[0])
        passes_meet.wait()  # the other batch's forward pass must have started too
        return real_forward(batch)

    def meeting_fetch(*args):
        with lock:
            fetches.append(args[2])
            first_two = len(fetches) <= 2
        if first_two:
            fetches_meet.wait()  # the second fetch starts before the first one ends
        return real_fetch(*args)

    monkeypatch.setattr(detector, "forward", meeting_forward)
    monkeypatch.setattr(request_handling.media, "fetch_media", meeting_fetch)
    prediction = service.predict([EntryRequest(bucket=USER_BUCKET, key=k) for k in frames], several=True)
    assert forwards == [4, 4]
    assert [r.source for r in prediction.results] == [f"s3://{USER_BUCKET}/{k}" for k in frames]
    assert sorted(fetches) == sorted(frames)


def run_cli(*args, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detect", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, **popen)


def test_cli_over_a_folder_draws_pictures(reference, tmp_path):
    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        (folder / name).write_bytes(SAMPLE_IMAGE.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out.jsonl"
    result = run_cli(str(folder), "--weights", str(reference / "efficientdet-d0.pth"), "--out", str(out),
                     "--draw", str(tmp_path / "pictures"))
    assert result.returncode == 1  # one image failed
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["source"].removeprefix(str(folder) + "/") for line in lines] == ["a.jpg", "b.jpg", "broken.png", "sub/c.jpg"]
    assert lines[2]["error"]["status"] == 400 and all("detections" in lines[i] for i in (0, 1, 3))
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["images"] == 3 and summary["failures"] == 1 and summary["detections"] > 0
    pictures = sorted((tmp_path / "pictures").iterdir())
    assert len(pictures) == 3
    with Image.open(pictures[0]) as picture:
        assert picture.size == (600, 400)


@pytest.mark.parametrize("option, words", [
    (["--out", "/nonexistent/out.jsonl"], "/nonexistent/out.jsonl: No such file or directory"),
    (["--draw", "/proc/pictures"], "/proc/pictures: No such file or directory"),
    (["--timestamps", "1,soon"], "--timestamps: 'soon' is not a number of seconds"),
])
def test_cli_options_it_cannot_use_are_one_line_before_any_work(reference, option, words):
    result = run_cli(str(SAMPLE_IMAGE), "--weights", str(reference / "efficientdet-d0.pth"), *option)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == f"python -m detect: error: {words}"
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_draws_full_size_pictures_with_jpeg_reduced_decode(reference, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "frame.jpg").write_bytes(video_frame(1920, 1080))
    out = tmp_path / "out.jsonl"
    result = run_cli(str(folder), "--weights", str(reference / "efficientdet-d0.pth"), "--out", str(out),
                     "--draw", str(tmp_path / "pictures"), env=dict(os.environ, JPEG_REDUCED_DECODE="true"))
    assert result.returncode == 0, result.stderr
    line = json.loads(out.read_text())
    assert (line["width"], line["height"]) == (1920, 1080) and line["detections"]
    with Image.open(tmp_path / "pictures" / "000000-frame.png") as picture:
        assert picture.size == (1920, 1080)


def test_cli_over_s3_prefix_interrupted_and_resumed(reference, s3_server, tmp_path):
    keys = [f"frames/video-9/{i:04d}.jpg" for i in range(40)]
    for key in keys:
        s3_server.put(USER_BUCKET, key, SAMPLE_IMAGE.read_bytes())
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, **s3_server.env(), ALLOWED_BUCKETS=USER_BUCKET)
    command = [sys.executable, "-m", "detect", f"s3://{USER_BUCKET}/frames/video-9/", "--weights",
               str(reference / "efficientdet-d0.pth"), "--out", str(out), "--chunk", "1"]
    # as from a terminal: a test run started as a background job ignores SIGINT, and its children would inherit that
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 5):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130
    first = len(out.read_text().splitlines())
    assert 5 <= first < 40
    resumed = subprocess.run(command + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    sources = [json.loads(line)["source"] for line in out.read_text().splitlines()]
    assert sources == [f"s3://{USER_BUCKET}/{k}" for k in keys]  # none redone, none missing, in order
    assert json.loads(resumed.stderr.strip().splitlines()[-1])["skipped"] == first


def test_cli_refuses_a_bucket_outside_allowed_buckets(reference, s3_server):
    env = dict(os.environ, **s3_server.env(), ALLOWED_BUCKETS="somewhere-else")
    result = run_cli(f"s3://{USER_BUCKET}/frames/", "--weights", str(reference / "efficientdet-d0.pth"), env=env)
    assert result.returncode == 2 and "ALLOWED_BUCKETS" in result.stderr


def test_cli_exits_2_on_a_path_that_does_not_exist(reference, tmp_path):
    result = run_cli(str(tmp_path / "frmaes"), "--weights", str(reference / "efficientdet-d0.pth"))
    assert result.returncode == 2 and "frmaes: no such file, folder or manifest" in result.stderr
    assert "Traceback" not in result.stderr


def test_loading_the_service_sets_torchs_threads_for_the_cli_and_the_handler(reference_model_dir):
    """The CLI and model_fn both load through DetectionService.load: each forward pass gets its share."""
    import torch

    from request_handling.settings import load_settings

    before = torch.get_num_threads()
    try:
        settings = load_settings(reference_model_dir, {"EFFICIENTDET_NUM_THREADS": "1"})
        DetectionService.load(reference_model_dir, settings)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_over_a_video_writes_its_frames_and_draws_them_named_as_the_users_frames(reference, tmp_path):
    from helpers.clips import encode, require_ffmpeg

    require_ffmpeg()
    clip = encode(tmp_path / "clip.mp4", seconds=3)
    out = tmp_path / "out.jsonl"
    result = run_cli(str(clip), "--weights", str(reference / "efficientdet-d0.pth"), "--sample-fps", "1", "--out",
                     str(out), "--draw", str(tmp_path / "pictures"))
    assert result.returncode == 0, result.stderr[-2000:]
    [line] = out.read_text().splitlines()
    video = json.loads(line)
    assert video["source"] == str(clip) and [f["frame"] for f in video["frames"]] == [0, 29, 59, 89]  # 0 … 3 s of 3.003
    pictures = sorted(p.name for p in (tmp_path / "pictures" / "000000-clip").iterdir())
    assert pictures == ["000000-0.0000.png", "000029-0.9676.png", "000059-1.9686.png", "000089-2.9696.png"]
    assert json.loads(result.stderr.strip().splitlines()[-1])["frames"] == 4


def test_cli_refuses_a_bad_sampling_option_with_the_usage(reference, tmp_path):
    result = run_cli(str(tmp_path), "--weights", str(reference / "efficientdet-d0.pth"), "--sample-fps", "0")
    assert result.returncode == 2 and "sample_fps" in result.stderr and result.stderr.startswith("usage:")


def test_cli_reads_every_container_in_place_and_refuses_a_binary_file_as_a_manifest(reference, tmp_path):
    """AVCHD, MPEG-PS, AVI and MXF clips, each a line with its frames as ffprobe lists them; a file of another
    name that is neither media nor text is a clear error, not a traceback."""
    from helpers.clips import encode, keyframe_indices, require_ffmpeg

    require_ffmpeg()
    clips = [encode(tmp_path / "avchd.mts", rate="25", seconds=2, options=("-f", "mpegts", "-mpegts_m2ts_mode", "1")),
             encode(tmp_path / "mpeg2.mpg", codec="mpeg2video", rate="25", seconds=2),
             encode(tmp_path / "mpeg4.avi", codec="mpeg4", rate="25", seconds=2),
             encode(tmp_path / "dnxhr.mxf", codec="dnxhd", rate="25", seconds=2, pix_fmt="yuv422p",
                    options=("-profile:v", "dnxhr_lb"))]
    out = tmp_path / "out.jsonl"
    result = run_cli(*map(str, clips), "--weights", str(reference / "efficientdet-d0.pth"), "--keyframes",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["source"] for line in lines] == [str(clip) for clip in clips]
    for clip, line in zip(clips, lines):
        assert [f["frame"] for f in line["frames"]] == keyframe_indices(clip), clip.name
    blob = tmp_path / "footage.bin"
    blob.write_bytes(bytes(range(256)) * 8)
    refused = run_cli(str(blob), "--weights", str(reference / "efficientdet-d0.pth"))
    assert refused.returncode == 2 and "neither an image, a video nor a manifest" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_cli_summarises_a_clip_by_label_segments_and_draws_its_contact_sheet(reference, tmp_path):
    from helpers.clips import changing_clip, require_ffmpeg

    require_ffmpeg()
    clip = changing_clip(tmp_path)
    out, pictures = tmp_path / "out.jsonl", tmp_path / "pictures"
    result = run_cli(str(clip), "--weights", str(reference / "efficientdet-d0.pth"), "--sample-fps", "2",
                     "--aggregate", "segments", "--draw", str(pictures), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    [line] = (json.loads(text) for text in out.read_text().splitlines())
    assert "frames" not in line and line["labels"]
    assert all(s["end"] <= 3.5 or s["start"] >= 5.5 for label in line["labels"] for s in label["segments"])
    assert any([(s["start"], s["end"]) for s in label["segments"]] == [(0.0, 3.0), (6.0, 9.0)]
               for label in line["labels"])
    sheet = Image.open(pictures / "000000-changing.png")
    assert sheet.width == 5 * 320 and sheet.height >= 4 * 213  # 18 thumbnails, five a row
    assert len(list((pictures / "000000-changing").iterdir())) == 18
