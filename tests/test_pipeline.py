"""The request pipeline's stages, one by one, with fakes for the work they schedule (no model, S3 or decoder)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from request_handling.bodies import EntryRequest
from request_handling.errors import bad_request
from request_handling.pipeline import (
    Batch,
    BatchRunner,
    EntryFailure,
    Frame,
    ImageResult,
    ResolvedRequest,
    batched,
    expand,
    gather,
    load_ahead,
)

pytestmark = pytest.mark.unit

FAR = time.monotonic() + 3600  # a deadline no test reaches


def frames(count: int, failed: tuple[int, ...] = ()) -> list[Frame]:
    made = [Frame(i, f"s3://b/{i}.jpg") for i in range(count)]
    return [f.failed(bad_request("broken")) if f.entry in failed else f for f in made]


def detected(frame: Frame) -> Frame:
    return replace(frame, outcome=ImageResult(frame.source, 1, 1, 0.2, 0.2, []))


def test_expand_makes_one_frame_per_image_entry_and_a_failed_frame_for_an_entry_it_cannot_serve():
    def resolve(index, request):
        if request.key == "bad.jpg":
            raise bad_request("bad entry")
        return ResolvedRequest(index, request, 0.2, 0.2, 100, None)

    out = list(expand([EntryRequest("b", "a.jpg"), EntryRequest("b", "bad.jpg")], resolve))
    assert [(f.entry, f.source) for f in out] == [(0, "s3://b/a.jpg"), (1, "s3://b/bad.jpg")]
    assert out[0].request.request.key == "a.jpg" and out[0].outcome is None
    assert isinstance(out[1].outcome, EntryFailure) and out[1].outcome.error.message == "bad entry"


def test_load_ahead_keeps_order_bounds_the_window_and_marks_the_last_frame():
    in_flight, most, lock = [0], [0], threading.Lock()

    def load(frame):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.01 * (5 - frame.entry % 5))  # later frames finish first
        with lock:
            in_flight[0] -= 1
        return replace(frame, fetch_seconds=0.5)

    with ThreadPoolExecutor(8) as pool:
        out = list(load_ahead(frames(12, failed=(3,)), load, pool, 4, FAR, 30.0))
    assert [f.entry for f in out] == list(range(12))
    assert most[0] <= 4
    assert [f.last for f in out] == [False] * 11 + [True]
    assert out[3].fetch_seconds == 0 and isinstance(out[3].outcome, EntryFailure)  # a failed frame is not loaded


def test_load_ahead_fails_what_is_not_loaded_by_the_deadline_with_504_and_never_starts_the_rest():
    started, release = [], threading.Event()

    def load(frame):
        started.append(frame.entry)
        release.wait(5)
        return frame

    with ThreadPoolExecutor(1) as pool:
        out = list(load_ahead(frames(3), load, pool, 3, time.monotonic() + 0.2, 0.2))
        release.set()
    assert [f.outcome.error.status_code for f in out] == [504, 504, 504]
    assert "s3://b/0.jpg was not read and decoded within REQUEST_TIMEOUT=0.2 s" == out[0].outcome.error.message
    assert started == [0]


def test_batched_groups_loaded_frames_and_passes_failures_on_their_own():
    loaded = [replace(f, last=f.entry == 6) for f in frames(7, failed=(2,))]
    out = list(batched(loaded, 3))
    assert [o.entry if isinstance(o, Frame) else ([f.entry for f in o.frames], o.last) for o in out] == [
        2, ([0, 1, 3], False), ([4, 5, 6], True)]
    ending_in_a_failure = [replace(f, last=f.entry == 2) for f in frames(3, failed=(2,))]
    assert [o.entry if isinstance(o, Frame) else [f.entry for f in o.frames] for o in
            batched(ending_in_a_failure, 3)] == [2, [0, 1]]


def test_the_batch_runner_runs_earlier_batches_on_the_pool_and_the_last_on_the_calling_thread():
    threads = []

    def detect(batch):
        threads.append(threading.current_thread().name)
        return [detected(f) for f in batch], {"network": 1.0}

    def prepare(batch):  # fails frame 1 as the device decoder might
        return [f.failed(bad_request("undecodable")) if f.entry == 1 else f for f in batch]

    with ThreadPoolExecutor(2, thread_name_prefix="detect") as pool:
        runner = BatchRunner(prepare, detect, pool, 2, FAR, 30.0)
        items = [Batch(frames(2), last=False), Frame(2, "x").failed(bad_request("bad")),
                 Batch([Frame(3, "y")], last=True)]
        out = list(runner.run(items))
    assert sorted(f.entry for f in out) == [0, 1, 2, 3]
    assert threads[0].startswith("detect") and threads[1] == threading.current_thread().name
    assert runner.batches == 2 and runner.timings == {"network": 2.0}
    assert isinstance({f.entry: f for f in out}[1].outcome, EntryFailure)


def test_the_batch_runner_fails_a_batch_whose_turn_comes_after_the_deadline_with_504():
    with ThreadPoolExecutor(1) as pool:
        runner = BatchRunner(lambda b: b, lambda b: pytest.fail("detected after the deadline"), pool, 1,
                             time.monotonic() - 1, 30.0)
        out = list(runner.run([Batch(frames(2), last=True)]))
    assert [f.outcome.error.status_code for f in out] == [504, 504] and runner.batches == 0
    assert "was not detected within REQUEST_TIMEOUT=30 s" in out[0].outcome.error.message


def test_gather_puts_each_outcome_in_its_entry_in_request_order():
    done = [detected(f) for f in reversed(frames(3))]
    assert [o.source for o in gather(done, 3)] == ["s3://b/0.jpg", "s3://b/1.jpg", "s3://b/2.jpg"]
    with pytest.raises(RuntimeError, match=r"entries \[2\]"):
        gather(done[1:], 3)


def test_load_ahead_flattens_a_videos_frames_in_place_and_marks_the_last():
    def load(frame):
        if frame.entry != 1:
            return frame
        return (replace(frame, frame_index=i, time=i / 2) for i in range(3))  # a video: its frames, decoded as asked

    with ThreadPoolExecutor(2) as pool:
        out = list(load_ahead(frames(3), load, pool, 2, FAR, 30.0))
    assert [(f.entry, f.frame_index) for f in out] == [(0, None), (1, 0), (1, 1), (1, 2), (2, None)]
    assert [f.last for f in out] == [False] * 4 + [True]


def test_a_video_that_runs_past_the_deadline_stops_with_one_frame_standing_for_the_rest():
    def slow_frames(frame):
        for i in range(100):
            time.sleep(0.05)
            yield replace(frame, frame_index=i, time=float(i))

    with ThreadPoolExecutor(1) as pool:
        out = list(load_ahead(frames(1), slow_frames, pool, 1, time.monotonic() + 0.3, 0.3))
    assert 2 <= len(out) < 10 and all(f.outcome is None for f in out[:-1])
    rest = out[-1]
    assert rest.rest_of_clip and rest.outcome.error.status_code == 504
    assert "was not read to the end of its sampling within REQUEST_TIMEOUT=0.3 s" in rest.outcome.error.message


def test_gather_puts_a_videos_frames_in_order_into_one_entry():
    from request_handling.results import ClipInfo

    info = ClipInfo(640, 360, 30.0, 5.0, "h264", 150)
    resolved = ResolvedRequest(1, EntryRequest("b", "v.mp4"), 0.2, 0.2, 100, None)
    video = [replace(detected(f), clip=info, request=resolved, entry=1, frame_index=i, time=t)
             for f, (i, t) in zip(frames(3), ((30, 1.0), (0, 0.0), (60, 2.0)))]
    [image, result] = gather([detected(frames(1)[0]), *video], 2)
    assert isinstance(image, ImageResult) and result.info == info
    assert [(f.index, f.time) for f in result.frames] == [(0, 0.0), (30, 1.0), (60, 2.0)] and result.error is None


def test_load_ahead_yields_a_loaded_frame_without_waiting_for_the_next_one():
    release = threading.Event()

    def load(frame):
        if frame.entry == 1:
            release.wait(5)
        return frame

    with ThreadPoolExecutor(2) as pool:
        loaded = load_ahead(frames(2), load, pool, 2, FAR, 30.0)
        first = next(loaded)  # frame 1 is still loading
        assert first.entry == 0 and not first.last
        release.set()
        assert [(f.entry, f.last) for f in loaded] == [(1, True)]
