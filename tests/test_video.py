"""Videos: which frames a request samples (against what ffprobe says of each frame), what the detector sees in
them (against the same frames sent as images), and the answers of the real toolkit for clips inline and on S3."""

from __future__ import annotations

import io
import json
import subprocess

import cv2
import numpy as np
import pytest
from helpers import USER_BUCKET
from helpers.clips import (
    copied,
    cut_short,
    encode,
    frame_times,
    last_frame_held,
    require_ffmpeg,
    rotated,
    sampled,
    shown_at,
    with_sound,
)
from helpers.images import encode as encode_image
from helpers.images import gradient
from helpers.matching import unmatched
from helpers.toolkit import Toolkit
from PIL import Image

from efficientdet import Detector
from request_handling.bodies import EntryRequest, parse_request
from request_handling.errors import RequestError
from request_handling.media import is_video, video_container
from request_handling.service import DetectionService
from request_handling.settings import Settings
from request_handling.video import Sampling, Video

pytestmark = pytest.mark.production


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    require_ffmpeg()
    folder = tmp_path_factory.mktemp("clips")
    h264 = encode(folder / "h264.mp4")
    made = {
        "h264": h264,
        "h265": encode(folder / "h265.mp4", codec="libx265", options=("-tag:v", "hvc1", "-x265-params", "log-level=error")),
        "vfr": encode(folder / "vfr.mp4", rate="30", filters="select='lt(n\\,30)+not(mod(n\\,4))'",
                      options=("-fps_mode", "vfr")),
        "vp9": encode(folder / "vp9.webm", codec="libvpx-vp9", seconds=3, options=("-b:v", "200k", "-deadline", "realtime")),
        "avi": encode(folder / "mpeg4.avi", codec="mpeg4", seconds=1),
    }
    made["rotated"] = rotated(h264, folder / "rotated.mp4")
    matroska = encode(folder / "h264.mkv", seconds=1)  # its codec id renamed to one no FFmpeg knows
    made["unknown codec"] = folder / "unknown.mkv"
    made["unknown codec"].write_bytes(matroska.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_QUUX4/ISO/AVC", 1))
    made["cut"] = cut_short(h264, folder / "cut.mp4")
    made["huge frames"] = encode(folder / "huge.mp4", width=1280, height=800, seconds=1)  # over the toolkit's limit
    return made


def test_a_clip_is_told_by_its_bytes_not_its_name(clips):
    assert is_video(clips["h264"].read_bytes()[:16]) and is_video(clips["vp9"].read_bytes()[:16])
    assert video_container(clips["avi"].read_bytes()[:200]) == "AVI"
    jpeg = encode_image(gradient(), "JPEG")
    assert not is_video(jpeg[:200]) and video_container(jpeg[:200]) is None


@pytest.mark.parametrize("clip, fps", [("h264", 1), ("h265", 1), ("vp9", 2), ("vfr", 2.5), ("vfr", 7)])
def test_sampled_frames_are_those_a_player_shows_at_each_time(clips, clip, fps):
    """Every 1/fps s from 0: the last frame at or before each time, with ffprobe's index and time for it (the
    variable-frame-rate clip holds frames for 4 intervals after its first second)."""
    times = frame_times(clips[clip])
    frames = sampled(clips[clip], sample_fps=fps)
    end = times[-1] + (times[-1] - times[-2])  # the last frame is on screen for one more interval
    wanted = [k / fps for k in range(len(frames))]
    assert len(frames) == len([k for k in range(1000) if k / fps < end - 1e-6])
    assert [f.index for f in frames] == [shown_at(times, t) for t in wanted]
    assert [f.time for f in frames] == pytest.approx([times[shown_at(times, t)] for t in wanted], abs=1e-4)
    assert all(f.error is None and f.pixels.shape == (360, 640, 3) for f in frames)


def test_every_nth_frame_timestamps_start_end_and_max_frames(clips):
    times = frame_times(clips["h264"])
    assert [f.index for f in sampled(clips["h264"], every_n_frames=30, start=1.0, end=4.0)] == [30, 60, 90]
    assert [f.index for f in sampled(clips["h264"], timestamps=(4.0, 0.5, 2.25))] == [
        shown_at(times, 0.5), shown_at(times, 2.25), shown_at(times, 4.0)]
    assert [f.index for f in sampled(clips["h264"], sample_fps=1, start=2, end=4)] == [
        shown_at(times, 2.0), shown_at(times, 3.0)]
    assert len(sampled(clips["h264"], sample_fps=10, max_frames=3)) == 3


def test_a_sampled_frame_matches_ffmpegs_own_decode_of_it(clips, tmp_path):
    frame = sampled(clips["h264"], timestamps=(2.0,))[0]
    png = tmp_path / "frame.png"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(clips["h264"]), "-vf",
                    f"select=eq(n\\,{frame.index})", "-frames:v", "1", str(png)], check=True, timeout=120)
    theirs = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert np.abs(frame.pixels.astype(int) - theirs).mean() < 2  # two conversions from YUV round differently


def test_a_rotated_phone_clip_is_detected_upright(clips):
    video = Video(clips["rotated"], "rotated.mp4", Settings().max_image_pixels)
    assert (video.info.width, video.info.height) == (360, 640)
    frames = list(video.frames(Sampling.of(None, None, (1.0,), None, None, None, 1000)))
    assert frames[0].pixels.shape == (640, 360, 3)
    upright = sampled(clips["h264"], timestamps=(1.0,))[0].pixels
    assert np.array_equal(frames[0].pixels, np.rot90(upright, k=-1))


# name: (file, stored width × height, sample aspect ratio, codec, extra options) → the width a player shows
ANAMORPHIC = {
    "HDV: MPEG-2 in MPEG-TS, 4:3 pixels": ("hdv.m2t", (480, 360), "4/3", "mpeg2video", ("-f", "mpegts")),
    "XDCAM: MPEG-2 in MXF, 4:3 pixels": ("xdcam.mxf", (480, 360), "4/3", "mpeg2video", ()),
    "PAL DV widescreen in MOV, 64:45 pixels": ("dv.mov", (720, 576), "64/45", "dvvideo", ()),
}


@pytest.mark.parametrize("name, shown_width", [(name, width) for name, width in zip(ANAMORPHIC, (640, 640, 1024))])
def test_an_anamorphic_clip_is_detected_as_a_player_shows_it(tmp_path, name, shown_width):
    """Non-square pixels stretched to the picture's shape: width and height are the shown ones, and the pixels are
    `ffmpeg -vf format=rgb24,scale=W:H:flags=bicubic`'s, an interlaced frame (DV's) converted to RGB field by field
    (to 1 level: FFmpeg's scaler rounds by its SIMD code, which differs by CPU and FFmpeg version; this test's ffmpeg
    is Debian's, the server's is PyAV's own)."""
    require_ffmpeg()
    file, (width, height), aspect, codec, options = ANAMORPHIC[name]
    clip = encode(tmp_path / file, codec=codec, width=width, height=height, rate="25", seconds=1,
                  filters=f"setsar={aspect}", options=options)
    video = Video(clip, file, Settings().max_image_pixels)
    assert (video.info.width, video.info.height) == (shown_width, height)
    frame = list(video.frames(Sampling.of(None, None, (0.5,), None, None, None, 1000)))[0]
    shown = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clip), "-vf",
                            f"select=eq(n\\,{frame.index}),scale=interl=-1,format=rgb24,"
                            f"scale={shown_width}:{height}:flags=bicubic",
                            "-frames:v", "1", "-f", "rawvideo", "-"], check=True, capture_output=True, timeout=120)
    theirs = np.frombuffer(shown.stdout, np.uint8).reshape(height, shown_width, 3)
    assert frame.pixels.shape == theirs.shape
    assert np.abs(frame.pixels.astype(int) - theirs).max() <= 1


def test_a_containers_aspect_ratio_comes_before_the_codecs(clips, tmp_path):
    """A MOV whose track says square pixels over a bitstream that says 3:2 is shown square, as ffprobe reads it."""
    stretched = encode(tmp_path / "stretched.mp4", width=480, height=360, seconds=1, filters="setsar=3/2")
    square = copied(stretched, tmp_path / "square.mov", "-aspect", "480:360")
    assert Video(stretched, "stretched.mp4", Settings().max_image_pixels).info.width == 720
    assert Video(square, "square.mov", Settings().max_image_pixels).info.width == 480


def test_a_clip_cut_short_answers_the_frames_it_has_and_one_error_for_the_rest(clips):
    frames = sampled(clips["cut"], sample_fps=1)  # its index still says 5.005 s: 0 … 5 s sampled
    *good, rest = frames
    assert 1 <= len(good) < 5 and all(f.error is None for f in good)
    assert rest.rest_of_clip and rest.error.status_code == 400
    assert f"no decodable frame from {len(good)}.000 s on" in rest.error.message
    assert "cut short" in rest.error.message and "lasts 5.005 s" in rest.error.message


@pytest.mark.parametrize("sampling", [{"every_n_frames": 30}, {"keyframes": True}])
def test_a_clip_cut_short_sampled_frame_by_frame_ends_with_one_error_for_the_rest(clips, sampling):
    """Every n-th frame and keyframes read the clip to where it stops decoding: short of its duration, one error."""
    *good, rest = sampled(clips["cut"], **sampling)
    assert good and all(f.error is None for f in good)
    assert rest.rest_of_clip and rest.error.status_code == 400
    assert "cut short" in rest.error.message and "lasts 5.005 s" in rest.error.message


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".ts", ".avi", ".wmv"])
def test_a_clip_whose_sound_outlasts_its_frames_ends_with_its_last_frame(clips, tmp_path, suffix):
    """Matroska and ASF give only the file's duration, here the sound's 6.5 s; an AVI of MPEG-4 with B-frames
    lists a frame more than it holds once sound delays it: past the last frame is the clip's end, not a frame
    missing."""
    codec = "mpeg4" if suffix == ".avi" else "libx264"
    frames_only = encode(tmp_path / f"frames{suffix}", codec=codec, rate="25", seconds=5, options=("-bf", "2"))
    clip = with_sound(frames_only, tmp_path / f"with-sound{suffix}", seconds=6.5)
    frames = sampled(clip, sample_fps=1)
    assert len(frames) == 5 and all(f.error is None for f in frames)  # 0 … 4 s: the last frame leaves at 5.0 s
    assert [f.index for f in frames] == [shown_at(frame_times(clip), t) for t in range(5)]


def test_a_last_frame_held_on_screen_is_shown_to_the_clips_end(tmp_path):
    """The index says the last frame (2.0 s) stays 2 s: the clip lasts 4 s, and is not cut short at 2.04 s."""
    clip = last_frame_held(tmp_path / "held.mp4")
    frames = sampled(clip, sample_fps=1)
    assert [(f.index, f.time, f.error) for f in frames] == [(0, 0, None), (25, 1, None), (50, 2, None), (50, 2, None)]
    inside, past = sampled(clip, timestamps=(3.5, 4.5))
    assert (inside.index, inside.error) == (50, None) and past.error.status_code == 400


def test_timestamps_past_where_a_clip_is_cut_short_are_each_an_error_in_place(clips):
    frames = sampled(clips["cut"], timestamps=(0.0, 4.0, 4.5))
    assert frames[0].error is None
    assert [f.time for f in frames[1:]] == [4.0, 4.5] and not any(f.rest_of_clip for f in frames)
    assert all(f.error.status_code == 400 and "no decodable frame at" in f.error.message for f in frames[1:])


def test_a_clip_whose_index_is_damaged_answers_what_it_decodes_and_a_400_for_the_rest(tmp_path):
    """4 KB of an AVI zeroed from its video properties chunk on: FFmpeg opens it, frames from 0.4 s on do not
    decode, and the seek back to its start that the decoder then makes (to get a frame it read and was not given)
    is refused."""
    data = bytearray(encode(tmp_path / "mpeg4.avi", codec="mpeg4", width=320, height=240, rate="25",
                            seconds=2).read_bytes())
    damage = data.index(b"vprp")
    data[damage:damage + 4096] = bytes(4096)
    frames = list(Video(io.BytesIO(bytes(data)), "damaged.avi", Settings().max_image_pixels).frames(
        Sampling(sample_fps=1)))
    assert frames[0].error is None and frames[-1].rest_of_clip
    assert frames[-1].error.status_code == 400 and "the clip is damaged" in frames[-1].error.message


def test_what_cannot_be_opened_is_400(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)
    with pytest.raises(RequestError) as raised:
        Video(junk, "junk.mp4", Settings().max_image_pixels)
    assert raised.value.status_code == 400 and "not a video" in raised.value.message


def test_frames_that_grow_past_max_image_pixels_mid_clip_are_413_for_the_rest(tmp_path):
    """A stream may change its picture size (a new H.264 sequence header): each frame is held to the limit before
    it is converted, as an image's header is."""
    small = encode(tmp_path / "small.ts", width=320, height=240, rate="10", seconds=2)
    large = encode(tmp_path / "large.ts", width=640, height=480, rate="10", seconds=2,
                   options=("-output_ts_offset", "2"))  # its times after the small one's
    joined = tmp_path / "joined.ts"
    joined.write_bytes(small.read_bytes() + large.read_bytes())
    frames = list(Video(joined, "joined.ts", 320 * 240).frames(Sampling(sample_fps=1)))
    assert [f.pixels.shape for f in frames[:2]] == [(240, 320, 3)] * 2
    [rest] = frames[2:]
    assert rest.rest_of_clip and rest.error.status_code == 413 and "640x480" in rest.error.message


@pytest.mark.parametrize("options, status, words", [
    ({"sample_fps": 2, "timestamps": [1.0]}, 400, "not sample_fps and timestamps"),
    ({"start": 5, "end": 2}, 400, "must come after start"),
    ({"max_frames": 5000}, 413, "MAX_VIDEO_FRAMES=1000"),
])
def test_sampling_options_that_conflict(options, status, words):
    request = EntryRequest("b", "k.mp4", **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    with pytest.raises(RequestError) as raised:
        Sampling.of(request.sample_fps, request.every_n_frames, request.timestamps, request.start, request.end,
                    request.max_frames, 1000)
    assert raised.value.status_code == status and words in raised.value.message


@pytest.mark.parametrize("field, value", [("sample_fps", 0), ("sample_fps", "1"), ("every_n_frames", 0),
                                          ("timestamps", []), ("timestamps", [-1]), ("start", -2), ("end", True),
                                          ("max_frames", 1.5)])
def test_each_sampling_option_is_checked_like_the_thresholds(field, value):
    with pytest.raises(RequestError) as raised:
        parse_request(json.dumps({"bucket": USER_BUCKET, "key": "k.mp4", field: value}), "application/json")
    assert raised.value.status_code == 400 and field in raised.value.message


@pytest.fixture(scope="module")
def service(reference):
    return DetectionService(Detector.from_checkpoint(reference / "efficientdet-d0.pth", 0), Settings(batch_size=1))


def test_detections_in_a_sampled_frame_are_those_of_the_same_frame_sent_as_an_image(service, clips):
    """The clip inline at 1 frame/s against each of its frames decoded alone and sent as a lossless PNG."""
    prediction = service.predict([EntryRequest(inline=clips["h264"].read_bytes())], several=False)
    [video] = prediction.results
    assert (video.info.width, video.info.height, video.info.codec) == (640, 360, "h264")
    assert [f.index for f in video.frames] == [shown_at(frame_times(clips["h264"]), t) for t in range(6)]  # 0 … 5 s
    capture = cv2.VideoCapture(str(clips["h264"]))
    pixels = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        pixels.append(bgr[:, :, ::-1])
    for frame in video.frames:
        png = io.BytesIO()
        Image.fromarray(pixels[frame.index]).save(png, "PNG")
        [image] = service.predict([EntryRequest(inline=png.getvalue())], several=False).results
        assert frame.outcome.detections and unmatched(image.detections, frame.outcome.detections, 640, 360) == []


@pytest.fixture(scope="module")
def toolkit(s3_server, reference_model_dir):
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**s3_server.env(), "MAX_VIDEO_BYTES": "2000000", "MAX_IMAGE_PIXELS": "1000000"}.items():
            env.setenv(name, value)
        yield Toolkit(reference_model_dir)


def test_an_s3_clip_answers_its_sampled_frames(toolkit, s3_server, clips):
    s3_server.put(USER_BUCKET, "videos/h264.mp4", clips["h264"].read_bytes())
    response = toolkit.invoke(json.dumps({"bucket": USER_BUCKET, "key": "videos/h264.mp4", "sample_fps": 2,
                                          "max_detections": 5}), "application/json")
    assert response.status == 200, response.body[:300]
    answer = response.json()
    assert {k: answer[k] for k in ("source", "width", "height", "codec")} == {
        "source": f"s3://{USER_BUCKET}/videos/h264.mp4", "width": 640, "height": 360, "codec": "h264"}
    assert answer["fps"] == pytest.approx(29.97, abs=0.01) and answer["duration"] == pytest.approx(5.0, abs=0.05)
    times = frame_times(clips["h264"])
    assert [f["frame"] for f in answer["frames"]] == [shown_at(times, k / 2) for k in range(11)]  # 0 … 5 s
    assert all(len(f["detections"]) == 5 and set(f) == {"frame", "time", "detections"} for f in answer["frames"])


def test_a_clip_and_an_image_as_json_lines_batch_transform_style(toolkit, s3_server, clips):
    s3_server.put(USER_BUCKET, "videos/vp9.webm", clips["vp9"].read_bytes())
    s3_server.put(USER_BUCKET, "videos/frame.png", encode_image(gradient(), "PNG"))
    lines = "\n".join(json.dumps({"bucket": USER_BUCKET, "key": key, "timestamps": [0.5, 1.5]})
                      for key in ("videos/vp9.webm", "videos/frame.png"))
    response = toolkit.invoke(lines, "application/jsonlines", accept="application/jsonlines")
    assert response.status == 200
    video, image = (json.loads(line) for line in response.body.splitlines())
    assert [f["time"] for f in video["frames"]] == pytest.approx([0.5, 1.5], abs=0.04) and "detections" in image


def test_custom_attributes_sample_a_raw_clip_and_the_rekognition_format(toolkit, clips):
    response = toolkit.invoke(clips["h264"].read_bytes(), "video/mp4", accept="application/json; format=rekognition",
                              headers={"X-Amzn-SageMaker-Custom-Attributes": "timestamps=1|3,max_detections=2"})
    assert response.status == 200, response.body[:300]
    answer = response.json()
    assert answer["VideoMetadata"]["Codec"] == "h264" and answer["VideoMetadata"]["FrameWidth"] == 640
    times = frame_times(clips["h264"])
    assert sorted({label["Timestamp"] for label in answer["Labels"]}) == [
        round(1000 * times[shown_at(times, t)]) for t in (1, 3)]  # frames 29 and 89, in ms
    assert all(set(label["Label"]) >= {"Name", "Confidence", "Instances"} for label in answer["Labels"])


@pytest.mark.parametrize("name, content_type, status, words", [
    ("junk", "video/mp4", 400, "not a decodable image"),
    ("matroska junk", "video/x-matroska", 400, "not a video this server can open (Invalid data found when"),
    ("unknown codec", "video/x-matroska", 415, "has no decoder"),
    ("large", "video/mp4", 413, "MAX_VIDEO_BYTES=2000000"),
    ("huge frames", "video/mp4", 413, "its frames are 1280x800 = 1024000 pixels; the limit is MAX_IMAGE_PIXELS=1000000"),
    ("sampling", "video/mp4", 400, "sample_fps"),
])
def test_bad_videos_get_their_status(toolkit, clips, tmp_path, name, content_type, status, words):
    body = {"junk": b"not a video at all" * 10, "matroska junk": b"\x1a\x45\xdf\xa3" + b"junk" * 100,
            "unknown codec": clips["unknown codec"].read_bytes(), "huge frames": clips["huge frames"].read_bytes(),
            "large": clips["h264"].read_bytes() + b"\x00" * 2_000_000, "sampling": clips["h264"].read_bytes()}[name]
    headers = {"X-Amzn-SageMaker-Custom-Attributes": "sample_fps=0"} if name == "sampling" else None
    response = toolkit.invoke(body, content_type, headers=headers)
    assert response.status == status and words in response.message, response.body[:300]


def test_a_clip_as_a_json_lines_entry_under_the_batch_transform_settings(s3_server, reference_model_dir, clips):
    """What `python -m deploy batch` sets for the model server (1 MB mini-batches, an hour per invocation): the
    clip and an image in one JSON Lines mini-batch, a line each."""
    from argparse import Namespace

    from deploy.batch import batch_environment

    s3_server.put(USER_BUCKET, "videos/clip.mp4", clips["h264"].read_bytes())
    s3_server.put(USER_BUCKET, "videos/still.png", encode_image(gradient(), "PNG"))
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MAX_VIDEO_BYTES", raising=False)  # the default (1 GiB), not the small one of this module's toolkit
        settings = batch_environment(Namespace(env=[], server="torchserve", max_payload_mb=1, timeout=3600))
        for name, value in {**s3_server.env(), **settings}.items():
            env.setenv(name, value)
        toolkit = Toolkit(reference_model_dir)
        lines = "\n".join(json.dumps({"bucket": USER_BUCKET, "key": key, "max_detections": 2})
                          for key in ("videos/clip.mp4", "videos/still.png"))
        response = toolkit.invoke(lines, "application/jsonlines", accept="application/jsonlines")
    assert response.status == 200
    video, image = (json.loads(line) for line in response.body.splitlines())
    times = frame_times(clips["h264"])
    assert "error" not in video and [f["frame"] for f in video["frames"]] == [shown_at(times, t) for t in range(6)]
    assert image["source"].endswith("still.png") and len(image["detections"]) == 2


def test_a_sampling_that_picks_no_frame_fails_the_entry_saying_why(service, clips):
    prediction = service.predict([EntryRequest(inline=clips["h264"].read_bytes(), start=100.0)], several=False)
    error = prediction.request_error()
    assert error.status_code == 400 and "no frame in the sampled range" in error.message


def test_a_webp_image_is_no_avi_though_both_are_riff_files():
    webp = encode_image(gradient(), "WEBP")
    assert webp[:4] == b"RIFF" and video_container(webp[:200]) is None and not is_video(webp[:16])


def test_a_small_gif_is_no_transport_stream_though_both_start_with_g():
    gif = encode_image(Image.new("L", (1, 1)), "GIF")
    assert len(gif) < 189 and gif[:1] == b"G" and video_container(gif[:200]) is None
    assert video_container((b"\x47" + b"\x00" * 187) * 2) == "MPEG transport stream"
    assert video_container((b"\x00" * 4 + b"\x47" + b"\x00" * 187) * 2) == "M2TS"


def test_segments_follow_a_clip_whose_content_changes_at_known_times(toolkit, tmp_path):
    """The photograph for 0–3 s and 6–9 s, grey between: each label the photograph always shows has two segments,
    starting and ending within one sampling interval (0.5 s) of the truth."""
    from helpers.clips import changing_clip, steady_segments

    clip = changing_clip(tmp_path)
    response = toolkit.invoke(clip.read_bytes(), "video/mp4",
                              headers={"X-Amzn-SageMaker-Custom-Attributes": "sample_fps=2,aggregate=both"})
    assert response.status == 200, response.body[:300]
    segments = steady_segments(response.json(), 0.5)
    assert segments and all(len(runs) == 2 for runs in segments.values())
    for (start, end), (truth_start, truth_end) in zip(sum(segments.values(), []), [(0, 3), (6, 9)] * len(segments)):
        assert abs(start - truth_start) <= 0.5 and abs(end - truth_end) <= 0.5
