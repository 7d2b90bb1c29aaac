"""Fast tier: Custom-Attributes options and the drop-in response formats, against their published examples."""

from __future__ import annotations

import pytest

from efficientdet import Detection
from request_handling.attributes import parse_custom_attributes, with_attributes
from request_handling.bodies import EntryRequest
from request_handling.errors import RequestError
from request_handling.formats import REKOGNITION, SAGEMAKER_OBJECT_DETECTION, entry
from request_handling.responses import ResponseType, negotiate
from request_handling.results import ImageResult

pytestmark = pytest.mark.unit

RESULT = ImageResult("s3://videoblocks-ml/frame.jpg", 600, 400, 0.2, 0.2, [
    Detection(0, "person", 0.9, (60.0, 40.0, 180.0, 360.0)),
    Detection(2, "car", 0.6, (300.0, 200.0, 600.0, 400.0)),
    Detection(0, "person", 0.5, (0.0, 0.0, 30.0, 100.0)),
])

# The SageMaker built-in Object Detection algorithm's response (its documentation's example, two boxes).
SAGEMAKER_EXAMPLE = {"prediction": [[4.0, 0.86419455409049988, 0.3088374733924866, 0.07030484080314636,
                                     0.7110607028007507, 0.9345266819000244],
                                    [0.0, 0.73376623392105103, 0.5714187026023865, 0.40427327156066895,
                                     0.827075183391571, 0.9712159633636475]]}
# Amazon Rekognition DetectLabels' response (its documentation's example, one label with one instance).
REKOGNITION_EXAMPLE = {"Labels": [{"Name": "Car", "Confidence": 99.15271759033203, "Instances": [
    {"BoundingBox": {"Width": 0.10616336017847061, "Height": 0.18528179824352264, "Left": 0.0037978808395564556,
                     "Top": 0.5039216876029968}, "Confidence": 99.15271759033203}], "Parents": [
    {"Name": "Vehicle"}, {"Name": "Transportation"}], "Aliases": [], "Categories": [{"Name": "Vehicles and Automotive"}]}],
    "LabelModelVersion": "3.0"}


def shape(value):
    """The structure of a JSON value: keys and element types, not the numbers."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value and not isinstance(value[0], dict | list) else [shape(v) for v in value[:1]]
    return type(value).__name__


def test_sagemaker_object_detection_entries_read_like_the_algorithms():
    answer = entry(RESULT, "efficientdet-d0", SAGEMAKER_OBJECT_DETECTION)
    assert shape(answer) == shape(SAGEMAKER_EXAMPLE)
    assert answer["prediction"][0] == [0.0, 0.9, 0.1, 0.1, 0.3, 0.9]
    assert all(0 <= v <= 1 for row in answer["prediction"] for v in row[2:])


def test_rekognition_entries_read_like_detect_labels():
    answer = entry(RESULT, "efficientdet-d0", REKOGNITION)
    example_label, label = REKOGNITION_EXAMPLE["Labels"][0], answer["Labels"][0]
    assert set(answer) == set(REKOGNITION_EXAMPLE) and set(label) == set(example_label)
    assert shape(label["Instances"][0]) == shape(example_label["Instances"][0])
    assert [(lb["Name"], lb["Confidence"], len(lb["Instances"])) for lb in answer["Labels"]] == [
        ("person", 90.0, 2), ("car", 60.0, 1)]
    assert label["Instances"][0]["BoundingBox"] == pytest.approx({"Width": 0.2, "Height": 0.8, "Left": 0.1, "Top": 0.1})


@pytest.mark.parametrize("accept, expected", [
    (None, ResponseType()),
    ("application/json; format=rekognition", ResponseType("application/json", "rekognition")),
    ("application/jsonlines;format=sagemaker-object-detection",
     ResponseType("application/jsonlines", "sagemaker-object-detection")),
    ("text/html, application/json; format=\"rekognition\"", ResponseType("application/json", "rekognition")),
])
def test_the_format_is_a_parameter_of_accept(accept, expected):
    assert negotiate(accept) == expected


def test_an_unknown_format_is_406_naming_the_formats():
    with pytest.raises(RequestError) as raised:
        negotiate("application/json; format=coco")
    assert raised.value.status_code == 406 and "rekognition" in raised.value.message


def test_custom_attributes_fill_what_the_body_did_not_set():
    options = parse_custom_attributes("pred_threshold=0.3, max_detections=20,classes=person|2")
    assert options == {"pred_threshold": 0.3, "max_detections": 20, "classes": ("person", 2)}
    raw, own, bad = with_attributes([EntryRequest(inline=b"x"), EntryRequest("b", "k", pred_threshold=0.5),
                                     EntryRequest(error=RequestError(404, "gone"))], options)
    assert (raw.pred_threshold, raw.max_detections, raw.classes) == (0.3, 20, ("person", 2))
    assert (own.pred_threshold, own.max_detections) == (0.5, 20)
    assert bad.pred_threshold is None and bad.error.status_code == 404


@pytest.mark.parametrize("header, words", [
    ("pred_threshold=3", "pred_threshold must be a number in [0, 1]"),
    ("pred_threshold=NaN", "pred_threshold must be a number"),
    ("max_detections=0", "max_detections must be an integer"),
    ("treshold=0.2", "unknown option 'treshold'"),
    ("pred_threshold", "key=value pairs"),
    ("pred_threshold=0.2,pred_threshold=0.3", "given twice"),
    ("x=" + "y" * 2000, "longer than 1024"),
])
def test_bad_custom_attributes_are_400_naming_the_key(header, words):
    with pytest.raises(RequestError) as raised:
        parse_custom_attributes(header)
    assert raised.value.status_code == 400 and words in raised.value.message
    assert "X-Amzn-SageMaker-Custom-Attributes" in raised.value.message
