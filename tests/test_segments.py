"""Label segments and the per-clip summary (`aggregate`): the rule on made-up frames, and the Rekognition shape
against botocore's own GetLabelDetection response model."""

from __future__ import annotations

import pytest
from helpers.rekognition import get_label_detection_errors

from efficientdet import Detection
from request_handling.bodies import option_fields
from request_handling.errors import RequestError
from request_handling.formats import OURS, REKOGNITION, SAGEMAKER_OBJECT_DETECTION, entry
from request_handling.results import ClipInfo, ClipResult, EntryFailure, FrameResult, ImageResult
from request_handling.segments import summarise

pytestmark = pytest.mark.unit

INFO = ClipInfo(640, 360, 30.0, 10.0, "h264", 300)
CLASS_IDS = {"person": 0, "car": 2, "cat": 15, "dog": 16}


def clip(labels_per_second: list[set[str]], **options) -> ClipResult:
    """A 10 s clip sampled once a second; frame k holds a detection of each label in labels_per_second[k] (a label
    'x!' as a failed frame instead)."""
    frames = []
    for k, labels in enumerate(labels_per_second):
        if "!" in labels:
            outcome = EntryFailure("clip.mp4", RequestError(400, "frame could not be decoded"))
        else:
            found = [Detection(CLASS_IDS[label], label, 0.5 + 0.1 * i, (0.0, 0.0, 10.0, 10.0))
                     for i, label in enumerate(sorted(labels))]
            outcome = ImageResult("clip.mp4", 640, 360, 0.2, 0.2, found)
        frames.append(FrameResult(30 * k, float(k), outcome))
    return ClipResult("s3://bucket/clips/clip.mp4", INFO, 0.2, 0.2, frames, **options)


def test_a_label_on_screen_from_when_to_when():
    person, dog = {"person"}, {"person", "dog"}
    summary = {s.label: s for s in summarise(clip([person, person, person, set(), set(), dog, dog, set(), set(), set()]))}
    assert [(s.start, s.end, s.frames) for s in summary["person"].segments] == [(0.0, 3.0, 3), (5.0, 7.0, 2)]
    assert [(s.start, s.end) for s in summary["dog"].segments] == [(5.0, 7.0)]
    assert (summary["person"].first, summary["person"].last, summary["person"].frames) == (0.0, 7.0, 5)


def test_one_sampled_frame_missing_does_not_split_a_segment_two_do():
    person = {"person"}
    one_gap = summarise(clip([person, set(), person, person]))[0]
    two_gaps = summarise(clip([person, set(), {"!"}, person]))[0]
    assert [(s.start, s.end) for s in one_gap.segments] == [(0.0, 4.0)]
    assert [(s.start, s.end) for s in two_gaps.segments] == [(0.0, 1.0), (3.0, 4.0)]


def test_the_last_frame_stays_on_screen_one_interval_and_labels_sort_by_time_on_screen():
    summaries = summarise(clip([{"cat"}] * 9 + [{"cat", "car"}]))
    assert [s.label for s in summaries] == ["cat", "car"]
    assert [(s.start, s.end) for s in summaries[1].segments] == [(9.0, 10.0)]  # the clip's end at most
    assert summaries[0].max_score == pytest.approx(0.6) and summaries[0].mean_score == pytest.approx(0.51)


def test_a_clip_with_no_detection_answers_no_labels():
    assert entry(clip([set()] * 3, aggregate="segments"), "efficientdet-d0")["labels"] == []


def test_aggregate_chooses_what_our_answer_holds():
    frames = [{"person"}, {"person"}]
    assert {"frames"} <= set(entry(clip(frames), "m")) and "labels" not in entry(clip(frames), "m")
    segments = entry(clip(frames, aggregate="segments"), "m", OURS)
    assert "frames" not in segments and segments["labels"][0]["segments"] == [
        {"start": 0.0, "end": 2.0, "max_score": 0.5, "frames": 2}]
    both = entry(clip(frames, aggregate="both"), "m", OURS)
    assert len(both["frames"]) == 2 and both["labels"][0]["label"] == "person"
    sagemaker = entry(clip(frames, aggregate="segments"), "m", SAGEMAKER_OBJECT_DETECTION)
    assert len(sagemaker["frames"]) == 2 and "prediction" in sagemaker["frames"][0] and sagemaker["labels"]


@pytest.mark.parametrize("value, ok", [("segments", True), ("BOTH", True), ("frames", True), ("all", False),
                                       (1, False)])
def test_aggregate_is_checked_like_the_other_options(value, ok):
    if ok:
        assert option_fields({"aggregate": value}) == {"aggregate": value.lower()}
    else:
        with pytest.raises(RequestError, match="aggregate must be one of frames, segments, both"):
            option_fields({"aggregate": value})


@pytest.mark.parametrize("sort_by", ["timestamp", "name"])
def test_rekognition_segments_are_get_label_detections_shape_exactly(sort_by):
    frames = [{"person"}, {"person", "dog"}, {"dog"}, set(), set(), {"person"}]
    answer = entry(clip(frames, aggregate="segments", sort_by=sort_by), "efficientdet-d0", REKOGNITION)
    assert get_label_detection_errors(answer) == ""
    assert answer["GetRequestMetadata"] == {"SortBy": sort_by.upper(), "AggregateBy": "SEGMENTS"}
    assert answer["Video"] == {"S3Object": {"Bucket": "bucket", "Name": "clips/clip.mp4"}}
    labels = [(item["Label"]["Name"], item["StartTimestampMillis"], item["EndTimestampMillis"], item["DurationMillis"])
              for item in answer["Labels"]]
    expected = [("person", 0, 2000, 2000), ("dog", 1000, 3000, 2000), ("person", 5000, 6000, 1000)]
    assert labels == (sorted(expected, key=lambda x: (x[0], x[1])) if sort_by == "name" else expected)
    assert all(item["Timestamp"] == item["StartTimestampMillis"] and "Instances" not in item["Label"]
               for item in answer["Labels"])
