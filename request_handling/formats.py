"""Response formats an existing client can read, one image's entry each: ours, SageMaker's built-in Object
Detection algorithm's, and Amazon Rekognition DetectLabels'. An image that failed keeps our error entry."""

from __future__ import annotations

from collections.abc import Callable

from .pipeline import ImageFailure, ImageResult

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


def entry(result: ImageResult | ImageFailure, model: str, response_format: str = OURS) -> dict:
    """One image's entry of the response in the format asked for."""
    if isinstance(result, ImageFailure):
        return {"source": result.source, "error": result.error.as_dict()}
    return ENTRY_BUILDERS[response_format](result, model)
