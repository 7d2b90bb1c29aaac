"""Clips as stock footage arrives: every container and codec contributors upload, decoded by PyAV, each sampled
frame the one ffprobe lists at its time, and only what the sampling needs read and decoded."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
from helpers import USER_BUCKET
from helpers.clips import (
    copied,
    cut_short,
    encode,
    frame_count,
    frame_times,
    keyframe_indices,
    require_ffmpeg,
    sampled,
    shown_at,
)
from helpers.toolkit import Toolkit

from request_handling.media import RANGED_READ_AHEAD, fetch_media, is_clip_name, video_container
from request_handling.settings import Settings
from request_handling.video import Sampling, Video

pytestmark = pytest.mark.production

# name: (file, codec, pixel format, extra options); each 3 s at 25 frames/s unless said
CLIPS = {
    "ProRes 422 HQ in MOV": ("prores.mov", "prores_ks", "yuv422p10le", ("-profile:v", "3")),
    "DNxHR in MXF": ("dnxhr.mxf", "dnxhd", "yuv422p", ("-profile:v", "dnxhr_lb")),
    "AVCHD H.264 in M2TS": ("avchd.mts", "libx264", "yuv420p", ("-f", "mpegts", "-mpegts_m2ts_mode", "1")),
    "H.264 in MPEG-TS": ("h264.ts", "libx264", "yuv420p", ("-bf", "2")),
    "MPEG-2 in MPEG-PS": ("mpeg2.mpg", "mpeg2video", "yuv420p", ("-bf", "2")),
    "MPEG-4 in AVI": ("mpeg4.avi", "mpeg4", "yuv420p", ("-bf", "2")),
    "H.264 with B-frames in AVI": ("h264.avi", "libx264", "yuv420p", ("-bf", "2")),  # stamped in decode order
    "H.264 with B-frames in ASF": ("h264.asf", "libx264", "yuv420p", ("-bf", "2")),  # so is this
    "HEVC 10-bit in MP4": ("hevc10.mp4", "libx265", "yuv420p10le",
                           ("-tag:v", "hvc1", "-x265-params", "log-level=error:keyint=12")),
    "AV1 in WebM": ("av1.webm", "libaom-av1", "yuv420p", ("-cpu-used", "8", "-g", "12")),
    "H.264 long GOP in Matroska": ("h264.mkv", "libx264", "yuv420p", ("-g", "50")),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    require_ffmpeg()
    folder = tmp_path_factory.mktemp("containers")
    return {name: encode(folder / file, codec=codec, rate="25", seconds=3, pix_fmt=pix_fmt, options=options)
            for name, (file, codec, pix_fmt, options) in CLIPS.items()}


@pytest.mark.parametrize("name", list(CLIPS))
def test_every_container_answers_its_frames_as_ffprobe_lists_them(made, name):
    """Times from the clip's first frame, whatever the container's start offset (MPEG-TS starts at 1.4 s)."""
    clip = made[name]
    assert video_container(clip.read_bytes()[:200]) is not None
    times = frame_times(clip)
    frames = sampled(clip, sample_fps=2)
    wanted = [k / 2 for k in range(len(frames))]
    assert len(frames) == 6 and all(f.error is None and f.pixels.shape == (360, 640, 3) for f in frames)
    assert [f.index for f in frames] == [shown_at(times, t) for t in wanted]
    assert [f.time for f in frames] == pytest.approx([times[shown_at(times, t)] for t in wanted], abs=1e-3)


@pytest.mark.parametrize("name", ["ProRes 422 HQ in MOV", "HEVC 10-bit in MP4", "H.264 long GOP in Matroska",
                                  "MPEG-4 in AVI"])
def test_a_seek_gives_the_pixels_of_decoding_every_frame(made, name):
    """Sparse timestamps (a seek to each where the container indexes every frame) give the same frames, pixel for
    pixel, as decoding the clip from its start; the HEVC clip's GOPs are open (its leading frames need the GOP
    before)."""
    clip = made[name]
    every = sampled(clip, every_n_frames=1)
    picked = sampled(clip, timestamps=[2.5, 0.3, 1.44, 1.45])
    times = frame_times(clip)
    assert [f.index for f in picked] == [shown_at(times, t) for t in (0.3, 1.44, 1.45, 2.5)]
    for frame in picked:
        assert np.array_equal(frame.pixels, every[frame.index].pixels), frame.index


@pytest.fixture(scope="module")
def with_b_frames(tmp_path_factory):
    """Clips whose non-reference frames can be skipped: HEVC with x265's B-frames in MP4 (as editors export it),
    MPEG-4 with B-frames in AVI, a camera's IBBP H.264 in M2TS (AVCHD) and MPEG-2 in MPEG-PS (neither container
    indexes every frame), and H.264 at a variable frame rate in MP4, Matroska and MPEG-TS, ten frames shown then the
    tenth held for ten intervals, every B-frame non-reference (so a held frame shown long after its time is one the
    decoder skips)."""
    require_ffmpeg()
    folder = tmp_path_factory.mktemp("b-frames")
    ibbp = ("-bf", "2", "-x264-params", "b-adapt=0:b-pyramid=none:keyint=15")
    held = dict(rate="30", seconds=4, filters="select='not(mod(floor(n/10)\\,2))'",
                options=("-fps_mode", "vfr", "-bf", "3", "-x264-params", "b-adapt=0:b-pyramid=none"))
    return {
        "HEVC in MP4": encode(folder / "hevc.mp4", codec="libx265", seconds=4, rate="25",
                              options=("-tag:v", "hvc1", "-x265-params", "log-level=error")),
        "MPEG-4 in AVI": encode(folder / "mpeg4.avi", codec="mpeg4", seconds=4, rate="25", options=("-bf", "2")),
        "AVCHD H.264 in M2TS": encode(folder / "avchd.mts", seconds=4, rate="30000/1001",
                                      options=(*ibbp, "-f", "mpegts", "-mpegts_m2ts_mode", "1")),
        "MPEG-2 in MPEG-PS": encode(folder / "mpeg2.mpg", codec="mpeg2video", seconds=4, rate="25",
                                    options=("-bf", "2")),
        "VFR H.264 in MP4": encode(folder / "held.mp4", **held),
        "VFR H.264 in Matroska": encode(folder / "held.mkv", **held),
        "VFR H.264 in MPEG-TS": encode(folder / "held.ts", **held),
    }


@pytest.mark.parametrize("name, fps", [("HEVC in MP4", 1), ("MPEG-4 in AVI", 2), ("AVCHD H.264 in M2TS", 1),
                                       ("MPEG-2 in MPEG-PS", 2), ("VFR H.264 in MP4", 2.5), ("VFR H.264 in MP4", 7),
                                       ("VFR H.264 in Matroska", 2.5), ("VFR H.264 in MPEG-TS", 2.5)])
def test_frames_between_samples_that_nothing_refers_to_are_not_decoded(with_b_frames, name, fps, monkeypatch):
    """The same frames, pixel for pixel, as decoding every frame; fewer frames decoded where a second holds many
    that no other frame refers to. Where a frame shown at a sampled time was skipped (a held one), its stretch is
    decoded again: from its keyframe where the container indexes every frame, else from the start."""
    clip = with_b_frames[name]
    every = sampled(clip, every_n_frames=1)
    decoded = []
    real = Video._decoded_frame
    monkeypatch.setattr(Video, "_decoded_frame", lambda self, frame: decoded.append(1) or real(self, frame))
    picked = sampled(clip, sample_fps=fps)
    times = frame_times(clip)
    assert [f.index for f in picked] == [shown_at(times, k / fps) for k in range(len(picked))]
    for frame in picked:
        assert np.array_equal(frame.pixels, every[frame.index].pixels), frame.index
    if fps <= 2:
        assert len(decoded) < 0.8 * len(times), (len(decoded), len(times))


def test_an_all_intra_clip_decodes_one_frame_a_sample(made, monkeypatch):
    decoded = []
    real_rgb = Video._rgb
    monkeypatch.setattr(Video, "_rgb", lambda self, frame: decoded.append(frame.index) or real_rgb(self, frame))
    frames = sampled(made["ProRes 422 HQ in MOV"], timestamps=[0.5, 1.5, 2.5])
    assert [f.index for f in frames] == decoded == [12, 37, 62]


def test_an_all_intra_master_cut_short_answers_the_frames_it_has_and_one_error_for_the_rest(made, tmp_path):
    """Half a master's bytes: its index, at the front, still lists every frame; the later frames' data is missing."""
    *good, rest = sampled(cut_short(made["ProRes 422 HQ in MOV"], tmp_path / "cut.mov"), sample_fps=1)
    assert 1 <= len(good) < 5 and all(f.error is None for f in good)
    assert rest.rest_of_clip and rest.error.status_code == 400
    assert f"no decodable frame from {len(good)}.000 s on" in rest.error.message and "cut short" in rest.error.message


def test_h264_copied_from_mp4_into_avi_answers_the_frames_of_the_mp4(tmp_path):
    """AVI has no presentation times: ffmpeg stamps the copied frames in decode order, and in half frames."""
    mp4 = encode(tmp_path / "b-frames.mp4", rate="10", seconds=4, options=("-bf", "2"))
    avi = copied(mp4, tmp_path / "copied.avi")
    ours, theirs = sampled(avi, sample_fps=3), sampled(mp4, sample_fps=3)
    assert len(ours) == 12 and [(f.index, f.time) for f in ours] == [(f.index, f.time) for f in theirs]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(ours, theirs))


def test_keyframes_sampling_answers_the_keyframes_ffprobe_lists(made):
    clip = made["H.264 long GOP in Matroska"]
    frames = sampled(clip, keyframes=True)
    assert [f.index for f in frames] == keyframe_indices(clip) == [0, 50]
    assert [f.index for f in sampled(clip, keyframes=True, start=1.0)] == [50]


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_keyframes_of_open_gops_are_each_answered_with_their_pixels(tmp_path, suffix):
    """H.264 with open GOPs (as broadcast encoders and x264's `open-gop` write it): its I-frames after the first are
    not IDR frames, so each is decoded alone; every keyframe ffprobe lists, from any start, with the pixels of
    decoding every frame."""
    require_ffmpeg()
    clip = encode(tmp_path / f"open-gop{suffix}", rate="25", seconds=4,
                  options=("-g", "25", "-bf", "3", "-x264-params", "open-gop=1"))
    frames = sampled(clip, keyframes=True)
    assert [f.index for f in frames] == keyframe_indices(clip) == [0, 25, 50, 75]
    assert [f.index for f in sampled(clip, keyframes=True, start=1.5)] == [50, 75]
    every = sampled(clip, every_n_frames=1)
    assert all(np.array_equal(f.pixels, every[f.index].pixels) for f in frames)


def test_keyframes_are_the_containers_where_the_decoder_flags_none(tmp_path):
    """QuickTime Animation (motion graphics with alpha, as stock overlays come): its MOV's sync samples are every
    12th frame, and FFmpeg's decoder flags no frame as a keyframe; the keyframes answered are the sync samples, with
    the pixels of decoding every frame."""
    require_ffmpeg()
    clip = encode(tmp_path / "animation.mov", codec="qtrle", width=320, height=240, rate="25", seconds=2,
                  pix_fmt="argb", options=("-g", "12"))
    flags = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=flags",
                            "-of", "csv=p=0", str(clip)], check=True, capture_output=True, text=True).stdout.split()
    frames, every = sampled(clip, keyframes=True), sampled(clip, every_n_frames=1)
    assert [f.index for f in frames] == [n for n, flag in enumerate(flags) if "K" in flag] == [0, 12, 24, 36, 48]
    assert all(np.array_equal(f.pixels, every[f.index].pixels) for f in frames)


@pytest.mark.parametrize("suffix", [".avi", ".asf"])
def test_keyframes_of_h264_with_b_frames_in_avi_and_asf_are_counted_in_place(tmp_path, suffix):
    """Such a clip's frames are counted, not timed: each keyframe keeps its place among all the frames."""
    require_ffmpeg()
    clip = encode(tmp_path / f"h264{suffix}", rate="25", seconds=3, options=("-bf", "2", "-g", "25"))
    frames = sampled(clip, keyframes=True)
    assert [f.index for f in frames] == keyframe_indices(clip) == [0, 25, 50]
    assert [f.time for f in frames] == pytest.approx([0, 1, 2], abs=1e-3)


def test_a_seek_never_answers_a_keyframe_shown_after_the_sampled_time(tmp_path):
    """AVI indexes decode times: with B-frames a keyframe decodes before the frames shown ahead of it (here the
    I-frame shown at 1.08 s decodes at 1.0 s), so a seek for 1.0 s lands on it and must go back a keyframe."""
    require_ffmpeg()
    clip = encode(tmp_path / "mpeg4.avi", codec="mpeg4", rate="25", seconds=4, options=("-bf", "2", "-g", "25"))
    times = frame_times(clip)
    frames = sampled(clip, sample_fps=2)
    assert [f.index for f in frames] == [shown_at(times, k / 2) for k in range(8)]
    every = sampled(clip, every_n_frames=1)
    assert all(np.array_equal(f.pixels, every[f.index].pixels) for f in frames)


def test_camcorder_files_are_clips_by_name_and_raw_dv_by_its_bytes(tmp_path):
    """HDV's .m2t (MPEG-TS), JVC's .mod/.tod (MPEG-PS/TS) and a DV camcorder's raw .dv are listed as clips; raw DV
    is told by its bytes and answers its frames as ffprobe lists them, at its frame rate (FFmpeg's average rate for
    it is its time base's), shown at its 4:3 picture's 768x576."""
    require_ffmpeg()
    assert all(is_clip_name(f"tape/clip{suffix}") for suffix in (".m2t", ".MOD", ".tod", ".dv"))
    clip = encode(tmp_path / "camcorder.dv", codec="dvvideo", width=720, height=576, rate="25", seconds=2,
                  options=("-f", "dv"))
    assert video_container(clip.read_bytes()[:200]) == "DV"
    assert Video(clip, "camcorder.dv", Settings().max_image_pixels).info.fps == 25
    times = frame_times(clip)
    at_rate, every_tenth = sampled(clip, sample_fps=2), sampled(clip, every_n_frames=10)
    assert [f.index for f in at_rate] == [shown_at(times, k / 2) for k in range(4)]
    assert [f.index for f in every_tenth] == [0, 10, 20, 30, 40]
    assert all(f.error is None and f.pixels.shape == (576, 768, 3) for f in at_rate + every_tenth)


# name: (source file, codec, pixel format, extra options); each 320x240 (x264's frame types for this picture
# leave the MPEG-TS cut two leading frames), cut at 1.3 s by `ffmpeg -ss 1.3 -c copy`
TRIMMED = {
    "H.264 in MP4, an edit list into a GOP": ("h264.mp4", "libx264", "yuv420p", ("-bf", "2", "-g", "25")),
    "ProRes in MOV, an edit list": ("prores.mov", "prores_ks", "yuv422p10le", ()),
    "H.264 open GOPs in MPEG-TS, starting inside one": (
        "open-gop.ts", "libx264", "yuv420p", ("-bf", "3", "-g", "25", "-x264-params", "open-gop=1")),
    "MPEG-2 in MPEG-PS, starting inside a GOP": ("mpeg2.mpg", "mpeg2video", "yuv420p", ("-bf", "2", "-g", "12")),
    "MPEG-4 in AVI, starting inside a GOP (its index seeks)": ("mpeg4.avi", "mpeg4", "yuv420p", ("-bf", "2", "-g", "24")),
}


@pytest.mark.parametrize("name", list(TRIMMED))
def test_a_clip_trimmed_without_re_encoding_answers_the_frames_it_shows(tmp_path, name):
    """Trimmed without re-encoding, as editors and `ffmpeg -c copy` cut: an MP4/MOV keeps the frames before the cut
    that the ones after it need, hidden by an edit list; a transport or program stream starts inside a GOP, its first
    frames undecodable. Neither kind of frame is the clip's: every sampling answers ffprobe's frames, with the pixels
    of decoding every frame."""
    require_ffmpeg()
    file, codec, pix_fmt, options = TRIMMED[name]
    source = encode(tmp_path / file, codec=codec, width=320, height=240, rate="25", seconds=4, pix_fmt=pix_fmt,
                    options=options)
    clip = copied(source, tmp_path / f"trimmed-{file}", start=1.3)
    times, keys = frame_times(clip), keyframe_indices(clip)
    every = sampled(clip, every_n_frames=1)
    assert [f.index for f in every] == list(range(frame_count(clip)))
    assert [f.time for f in every[:len(times)]] == pytest.approx(times, abs=1e-3)
    times = [f.time for f in every]  # with the last frame ffprobe gives no time (MPEG-PS's, AVI's)
    wanted = (0.3, 1.0, 1.64)
    at_rate = [shown_at(times, k / 2) for k in range(10) if k / 2 < times[-1] + 0.04 - 1e-6]  # to the last frame's end
    for frames, indices in ((sampled(clip, sample_fps=2), at_rate),
                            (sampled(clip, timestamps=wanted), [shown_at(times, t) for t in wanted]),
                            (sampled(clip, keyframes=True), keys),
                            (sampled(clip, keyframes=True, start=1.0), [k for k in keys if times[k] >= 1.0])):
        assert [f.index for f in frames] == indices
        assert all(f.error is None and np.array_equal(f.pixels, every[f.index].pixels) for f in frames)


def test_an_s3_master_is_read_by_ranges_only_where_it_is_sampled(s3_server, tmp_path):
    """An all-intra master from S3 at three timestamps: a seek each, and only the ranges around them fetched."""
    require_ffmpeg()
    master = encode(tmp_path / "master.mov", codec="prores_ks", rate="25", seconds=20, pix_fmt="yuv422p10le",
                    options=("-profile:v", "3"))
    s3_server.put(USER_BUCKET, "videos/master.mov", master.read_bytes())
    reader = fetch_media(s3_server.client(), USER_BUCKET, "videos/master.mov", 10_000_000, 1 << 30)
    frames = sampled(reader, timestamps=[3.0, 10.0, 17.0])
    assert [f.index for f in frames] == [75, 250, 425] and all(f.error is None for f in frames)
    size = master.stat().st_size
    assert reader.fetched <= 3 * 2 * RANGED_READ_AHEAD[0] + 4 * size // 100, (reader.fetched, size)


def test_a_clip_read_past_max_video_bytes_answers_what_it_has_and_a_413(s3_server, tmp_path):
    require_ffmpeg()
    master = encode(tmp_path / "master.mov", codec="prores_ks", rate="25", seconds=8, pix_fmt="yuv422p10le",
                    options=("-profile:v", "3"))
    s3_server.put(USER_BUCKET, "videos/limited.mov", master.read_bytes())
    limit = master.stat().st_size // 3
    reader = fetch_media(s3_server.client(), USER_BUCKET, "videos/limited.mov", 10_000_000, limit)
    frames = sampled(reader, every_n_frames=1)
    assert frames[-1].rest_of_clip and frames[-1].error.status_code == 413
    assert f"MAX_VIDEO_BYTES={limit}" in frames[-1].error.message and 0 < len(frames) < 200


def test_a_clip_replaced_in_s3_while_it_is_read_answers_a_409_for_the_rest(s3_server, tmp_path):
    """Every range is asked of the version first opened: a contributor's re-upload under the same key mid-request
    is never decoded half from each upload."""
    require_ffmpeg()
    clip = encode(tmp_path / "clip.mp4", width=1280, height=720, rate="25", seconds=6, options=("-b:v", "8M"))
    s3_server.put(USER_BUCKET, "videos/replaced.mp4", clip.read_bytes())
    reader = fetch_media(s3_server.client(), USER_BUCKET, "videos/replaced.mp4", 10_000_000, 1 << 30)
    frames = Video(reader, "s3://replaced.mp4", 10_000_000).frames(Sampling(sample_fps=1))
    first = next(frames)
    assert first.error is None and reader.fetched < clip.stat().st_size // 2
    s3_server.put(USER_BUCKET, "videos/replaced.mp4", clip.read_bytes()[::-1])
    rest = list(frames)
    assert rest[-1].rest_of_clip and rest[-1].error.status_code == 409
    assert "was replaced in S3 while it was read" in rest[-1].error.message


def test_a_clip_sent_inline_in_any_container_through_the_toolkit(made, reference_model_dir):
    toolkit = Toolkit(reference_model_dir)
    for name in ("MPEG-4 in AVI", "DNxHR in MXF", "AVCHD H.264 in M2TS"):
        response = toolkit.invoke(made[name].read_bytes(), "application/x-image",
                                  headers={"X-Amzn-SageMaker-Custom-Attributes": "keyframes=true,max_detections=1"})
        assert response.status == 200, (name, response.body[:300])
        answer = response.json()
        assert [f["frame"] for f in answer["frames"]] == keyframe_indices(made[name])[:len(answer["frames"])]


def test_keyframes_conflicts_with_the_other_samplings():
    with pytest.raises(Exception, match="not sample_fps and keyframes"):
        Sampling.of(1.0, None, None, None, None, None, 1000, True)


def test_bytes_in_memory_open_as_a_clip(made):
    clip = made["H.264 in MPEG-TS"]
    assert [f.index for f in sampled(io.BytesIO(clip.read_bytes()), sample_fps=1)] == [0, 25, 50]
    assert json.dumps([f.time for f in sampled(clip, sample_fps=1)]) == "[0.0, 1.0, 2.0]"
