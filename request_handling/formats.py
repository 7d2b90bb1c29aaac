"""Response formats an existing client can read, one entry per image or video each: ours, SageMaker's built-in
Object Detection algorithm's, and Amazon Rekognition's (DetectLabels for an image, GetLabelDetection for a video).
An image that failed keeps our error entry; so does a video's frame."""

from __future__ import annotations

from collections.abc import Callable

from .bodies import split_s3_uri
from .results import ClipResult, EntryFailure, FrameResult, ImageResult, Outcome
from .segments import LabelSummary, summarise

OURS, SAGEMAKER_OBJECT_DETECTION, REKOGNITION = "efficientdet", "sagemaker-object-detection", "rekognition"


def efficientdet_entry(result: ImageResult, model: str) -> dict:
    return {
        "source": result.source, "width": result.width, "height": result.height, "model": model,
        "pred_threshold": result.pred_threshold, "iou_threshold": result.iou_threshold,
        "detections": [{"label": d.label, "class_id": d.class_id, "score": d.score, "box": list(d.box)}
                       for d in result.detections],
    }


def sagemaker_object_detection_entry(result: ImageResult, model: str) -> dict:
    """`{"prediction": [[class_id, score, xmin, ymin, xmax, ymax], …]}`, coordinates as fractions of the image."""
    width, height = result.width, result.height
    return {"prediction": [[float(d.class_id), d.score, d.box[0] / width, d.box[1] / height, d.box[2] / width,
                            d.box[3] / height] for d in result.detections]}


def rekognition_entry(result: ImageResult, model: str) -> dict:
    """DetectLabels-like: one label per class found, its instances' boxes as ratios, confidences in 0–100."""
    width, height = result.width, result.height
    labels: dict[str, dict] = {}
    for d in result.detections:  # best first, so a label's first instance sets its confidence
        name = d.label or f"class {d.class_id}"
        label = labels.setdefault(name, {"Name": name, "Confidence": 100 * d.score, "Instances": [], "Parents": [],
                                         "Aliases": [], "Categories": []})
        x1, y1, x2, y2 = d.box
        label["Instances"].append({"BoundingBox": {"Width": (x2 - x1) / width, "Height": (y2 - y1) / height,
                                                   "Left": x1 / width, "Top": y1 / height},
                                   "Confidence": 100 * d.score})
    return {"Labels": list(labels.values()), "LabelModelVersion": model}


ENTRY_BUILDERS: dict[str, Callable[[ImageResult, str], dict]] = {
    OURS: efficientdet_entry, SAGEMAKER_OBJECT_DETECTION: sagemaker_object_detection_entry,
    REKOGNITION: rekognition_entry,
}


def video_entry(result: ClipResult, model: str, response_format: str) -> dict:
    """A clip's entry: what the clip is, then each sampled frame's index, time and entry (detections in the
    format's own shape, without the image fields the clip already gives) and/or its labels' summary, as
    `aggregate` asks (SageMaker's shape keeps its frames beside the summary); Rekognition's GetLabelDetection
    shape for `rekognition` (by SEGMENTS or TIMESTAMPS)."""
    info = result.info
    if response_format == REKOGNITION:
        if result.aggregate == "frames":
            return rekognition_video_entry(result, model)
        return rekognition_segments_entry(result, model)
    built = {"source": result.source, "width": info.width, "height": info.height, "fps": info.fps,
             "duration": info.duration, "codec": info.codec, "model": model, "pred_threshold": result.pred_threshold,
             "iou_threshold": result.iou_threshold}
    if result.aggregate != "segments" or response_format == SAGEMAKER_OBJECT_DETECTION:
        built["frames"] = [frame_entry(f, model, response_format) for f in result.frames]
    if result.aggregate != "frames":
        built["labels"] = [label_entry(summary) for summary in summarise(result)]
    if result.error is not None:
        built["error"] = result.error.as_dict()
    return built


def label_entry(summary: LabelSummary) -> dict:
    return {"label": summary.label, "class_id": summary.class_id, "first": summary.first, "last": summary.last,
            "frames": summary.frames, "max_score": summary.max_score, "mean_score": summary.mean_score,
            "segments": [{"start": s.start, "end": s.end, "max_score": s.max_score, "frames": s.frames}
                         for s in summary.segments]}


IMAGE_FIELDS = ("source", "width", "height", "model", "pred_threshold", "iou_threshold")


def frame_entry(frame: FrameResult, model: str, response_format: str) -> dict:
    head = {"frame": frame.index, "time": frame.time}
    if isinstance(frame.outcome, EntryFailure):
        return {**head, "error": frame.outcome.error.as_dict()}
    built = ENTRY_BUILDERS[response_format](frame.outcome, model)
    return {**head, **{key: value for key, value in built.items() if key not in IMAGE_FIELDS}}


def rekognition_video_entry(result: ClipResult, model: str) -> dict:
    """GetLabelDetection-like: `Labels` as {Timestamp (ms), Label {Name, Confidence, Instances …}} per label and
    frame, `VideoMetadata` with codec, duration, frame rate and size; ordered as Rekognition's SortBy."""
    labels = [{"Timestamp": round(frame.time * 1000), "Label": label} for frame in result.frames
              if isinstance(frame.outcome, ImageResult) for label in rekognition_entry(frame.outcome, model)["Labels"]]
    if result.sort_by == "name":
        labels.sort(key=lambda label: (label["Label"]["Name"], label["Timestamp"]))
    built = {"JobStatus": "SUCCEEDED", "VideoMetadata": video_metadata(result),
             "Labels": labels, "LabelModelVersion": model, "source": result.source}
    return with_errors(built, result)


def video_metadata(result: ClipResult) -> dict:
    info = result.info
    return {"Codec": info.codec, "DurationMillis": round(info.duration * 1000), "FrameRate": info.fps,
            "FrameHeight": info.height, "FrameWidth": info.width}


def with_errors(built: dict, result: ClipResult) -> dict:
    """The entry with the frames that failed (`FrameErrors`) and a clip cut short (`StatusMessage`, `error`)."""
    frame_errors = [{"Timestamp": round(f.time * 1000), "frame": f.index, "error": f.outcome.error.as_dict()}
                    for f in result.frames if isinstance(f.outcome, EntryFailure)]
    if frame_errors:
        built["FrameErrors"] = frame_errors
    if result.error is not None:
        built["StatusMessage"] = result.error.message
        built["error"] = result.error.as_dict()
    return built


def rekognition_segments_entry(result: ClipResult, model: str) -> dict:
    """GetLabelDetection with AggregateBy=SEGMENTS: one `Labels` item per label and segment, its `Timestamp` the
    segment's start, with `StartTimestampMillis`, `EndTimestampMillis`, `DurationMillis` and a `Label` without
    instances; ordered as Rekognition's SortBy (TIMESTAMP: by start; NAME: by name, then start). An S3 clip is
    named in `Video.S3Object`."""
    labels = []
    for summary in summarise(result):
        for segment in summary.segments:
            start, end = round(segment.start * 1000), round(segment.end * 1000)
            labels.append({"Timestamp": start, "Label": {"Name": summary.label, "Confidence": 100 * segment.max_score,
                                                         "Parents": [], "Aliases": [], "Categories": []},
                           "StartTimestampMillis": start, "EndTimestampMillis": end, "DurationMillis": end - start})
    by_name = result.sort_by == "name"
    labels.sort(key=lambda label: (label["Label"]["Name"], label["Timestamp"]) if by_name
                else (label["Timestamp"], label["Label"]["Name"]))
    built = {"JobStatus": "SUCCEEDED", "VideoMetadata": video_metadata(result), "Labels": labels,
             "LabelModelVersion": model,
             "GetRequestMetadata": {"SortBy": "NAME" if by_name else "TIMESTAMP", "AggregateBy": "SEGMENTS"}}
    if result.source and result.source.startswith("s3://"):
        bucket, key = split_s3_uri(result.source)
        built["Video"] = {"S3Object": {"Bucket": bucket, "Name": key}}
    return with_errors(built, result)


def entry(result: Outcome, model: str, response_format: str = OURS) -> dict:
    """One image's or video's entry of the response in the format asked for."""
    if isinstance(result, EntryFailure):
        return {"source": result.source, "error": result.error.as_dict()}
    if isinstance(result, ClipResult):
        return video_entry(result, model, response_format)
    return ENTRY_BUILDERS[response_format](result, model)
