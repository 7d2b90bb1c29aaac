"""inference.py through the real sagemaker-pytorch-inference HandlerService, against SeaweedFS S3."""

from __future__ import annotations

import json

import pytest
from conftest import USER_BUCKET, USER_KEY
from images import encode, gradient, png_claiming, sixteen_bit_png
from matching import unmatched
from toolkit import Toolkit

from request_handling.s3 import fetch_object

ALLOWED = f"{USER_BUCKET},allowed-but-missing"
MAX_IMAGE_BYTES = 2_000_000


@pytest.fixture(scope="module")
def toolkit(s3_server, untrained_model_dir):
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3_server.env().items():
            env.setenv(name, value)
        env.setenv("ALLOWED_BUCKETS", ALLOWED)
        env.setenv("MAX_IMAGE_BYTES", str(MAX_IMAGE_BYTES))
        env.setenv("S3_READ_TIMEOUT", "5")
        s3_server.put(USER_BUCKET, "bad/zero.jpg", b"")
        jpeg = encode(gradient(), "JPEG")
        s3_server.put(USER_BUCKET, "bad/truncated.jpg", jpeg[: len(jpeg) // 2])
        s3_server.put(USER_BUCKET, "bad/text.jpg", b"this is not an image\n")
        s3_server.put(USER_BUCKET, "bad/huge-header.png", png_claiming(60000, 60000))
        s3_server.put(USER_BUCKET, "bad/too-many-bytes.jpg", b"\xff" * (MAX_IMAGE_BYTES + 1))
        yield Toolkit(untrained_model_dir)


def body(**fields) -> str:
    return json.dumps({"bucket": USER_BUCKET, "key": USER_KEY, **fields})


def assert_detection_schema(result: dict, source: str | None) -> None:
    assert result["source"] == source
    assert (result["width"], result["height"]) == (600, 400)
    assert result["model"] == "efficientdet-d0"
    scores = [d["score"] for d in result["detections"]]
    assert scores == sorted(scores, reverse=True)
    for d in result["detections"]:
        assert set(d) == {"label", "class_id", "score", "box"}
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= 600 and 0 <= y1 < y2 <= 400
        assert d["score"] > result["pred_threshold"]


SOURCE = f"s3://{USER_BUCKET}/{USER_KEY}"


def test_csv_body(toolkit):
    response = toolkit.invoke(f"{USER_BUCKET}/{USER_KEY}", "text/csv")
    assert response.status == 200 and response.content_type == "application/json"
    result = response.json()
    assert_detection_schema(result, SOURCE)
    assert (result["pred_threshold"], result["iou_threshold"]) == (0.2, 0.2)


def test_csv_body_with_s3_scheme_and_blanks(toolkit):
    response = toolkit.invoke(f"  s3://{USER_BUCKET}/{USER_KEY}  \n", "text/csv")
    assert response.status == 200
    assert_detection_schema(response.json(), SOURCE)


def test_json_body(toolkit):
    response = toolkit.invoke(body(), "application/json")
    assert response.status == 200
    assert_detection_schema(response.json(), SOURCE)


def test_json_body_with_thresholds(toolkit):
    response = toolkit.invoke(body(pred_threshold=0.01, iou_threshold=0.6), "application/json")
    assert response.status == 200
    result = response.json()
    assert_detection_schema(result, SOURCE)
    assert (result["pred_threshold"], result["iou_threshold"]) == (0.01, 0.6)
    assert result["detections"]


def test_s3_uri_form_and_options(toolkit):
    response = toolkit.invoke(json.dumps({"s3_uri": SOURCE, "pred_threshold": 0.01, "max_detections": 3}))
    assert response.status == 200 and len(response.json()["detections"]) == 3


def test_classes_filter(toolkit):
    everything = toolkit.invoke(body(pred_threshold=0.01)).json()["detections"]
    wanted = next(d for d in everything if d["label"])
    only = toolkit.invoke(body(pred_threshold=0.01, classes=[wanted["label"]])).json()["detections"]
    assert only and {d["label"] for d in only} == {wanted["label"]}
    by_id = toolkit.invoke(body(pred_threshold=0.01, classes=[wanted["class_id"]])).json()["detections"]
    assert by_id == only


def test_raw_image_bytes(toolkit, reference):
    response = toolkit.invoke((reference / "coffee.png").read_bytes(), "image/png")
    assert response.status == 200
    assert_detection_schema(response.json(), None)


@pytest.mark.parametrize("image, content_type", [
    (encode(gradient().convert("L"), "PNG"), "image/png"),
    (encode(gradient().convert("CMYK"), "JPEG"), "image/jpeg"),
    (encode(gradient().convert("RGBA"), "PNG"), "image/png"),
    (sixteen_bit_png(), "image/png"),
    (encode(gradient(), "GIF"), "application/x-image"),
    (encode(gradient(), "WEBP"), "application/x-image"),
    (encode(gradient(), "TIFF"), "application/x-image"),
], ids=["grayscale", "cmyk", "alpha", "16-bit", "gif", "webp", "tiff"])
def test_image_modes_are_converted_not_refused(toolkit, image, content_type):
    response = toolkit.invoke(image, content_type)
    assert response.status == 200, response.message
    result = response.json()
    assert result["width"] > 0 and result["height"] > 0


def test_several_images_keep_order_and_errors_in_place(toolkit):
    lines = [f"{USER_BUCKET}/{USER_KEY}", f"{USER_BUCKET}/missing.jpg", f"s3://{USER_BUCKET}/{USER_KEY}"]
    response = toolkit.invoke("\n".join(lines), "text/csv")
    assert response.status == 200
    first, missing, third = response.json()
    assert first["source"] == third["source"] == SOURCE
    assert missing == {"source": f"s3://{USER_BUCKET}/missing.jpg",
                       "error": {"status": 404, "message": missing["error"]["message"]}}


def test_batched_detections_equal_single_requests(toolkit, reference_model_dir):
    handler = Toolkit(reference_model_dir)
    single = handler.invoke(body()).json()
    batched = handler.invoke(json.dumps([json.loads(body())] * 3)).json()
    assert single["detections"]
    for result in batched:
        assert unmatched(single["detections"], result["detections"], 600, 400) == []


def test_json_lines_in_and_out(toolkit):
    lines = "\n".join([body(), body(pred_threshold=0.5), json.dumps({"bucket": USER_BUCKET, "key": "nope.jpg"})])
    response = toolkit.invoke(lines, "application/jsonlines", accept="application/jsonlines")
    assert response.status == 200 and response.content_type == "application/jsonlines"
    results = [json.loads(line) for line in response.body.splitlines()]
    assert [r.get("pred_threshold") for r in results] == [0.2, 0.5, None]
    assert results[2]["error"]["status"] == 404


def test_json_array_answers_an_array(toolkit):
    response = toolkit.invoke(json.dumps([json.loads(body()), {"s3_uri": SOURCE, "iou_threshold": 0.5}]))
    assert response.status == 200
    assert [r["iou_threshold"] for r in response.json()] == [0.2, 0.5]


def test_fifty_requests_create_client_and_model_once(s3_server, untrained_model_dir, monkeypatch):
    import request_handling.service

    loads = []
    original = request_handling.service.DetectionService.load.__func__
    monkeypatch.setattr(request_handling.service.DetectionService, "load",
                        classmethod(lambda cls, *a: loads.append(a) or original(cls, *a)))
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    handler = Toolkit(untrained_model_dir)
    clients_before = request_handling.s3.clients_created
    statuses = [handler.invoke(f"{USER_BUCKET}/{USER_KEY}", "text/csv").status for _ in range(50)]
    assert statuses == [200] * 50
    assert len(loads) == 1
    assert request_handling.s3.clients_created == max(clients_before, 1)
    assert request_handling.s3.s3_client(1, 1, 1, 1) is request_handling.s3._client


DEEP = "[" * 100_000 + "]" * 100_000

BAD_INPUTS = [
    # (id, body, content type, accept, status, words the message must contain)
    ("pred-threshold-10", body(pred_threshold=10), "application/json", None, 400, "pred_threshold"),
    ("iou-threshold-10", body(iou_threshold=10), "application/json", None, 400, "iou_threshold"),
    ("negative-threshold", body(pred_threshold=-0.1), "application/json", None, 400, "pred_threshold"),
    ("threshold-string", body(pred_threshold="0.5"), "application/json", None, 400, "pred_threshold"),
    ("threshold-boolean", body(pred_threshold=True), "application/json", None, 400, "pred_threshold"),
    ("threshold-nan", body()[:-1] + ', "pred_threshold": NaN}', "application/json", None, 400, "NaN"),
    ("threshold-infinity", body()[:-1] + ', "iou_threshold": Infinity}', "application/json", None, 400, "Infinity"),
    ("threshold-minus-infinity", body()[:-1] + ', "iou_threshold": -Infinity}', "application/json", None, 400, "Infinity"),
    ("threshold-overflow", body()[:-1] + ', "pred_threshold": 1e400}', "application/json", None, 400, "pred_threshold"),
    ("max-detections-zero", body(max_detections=0), "application/json", None, 400, "max_detections"),
    ("max-detections-float", body(max_detections=1.5), "application/json", None, 400, "max_detections"),
    ("unknown-field", body(treshold=0.5), "application/json", None, 400, "treshold"),
    ("missing-key", json.dumps({"bucket": USER_BUCKET}), "application/json", None, 400, "key"),
    ("empty-key", json.dumps({"bucket": USER_BUCKET, "key": "  "}), "application/json", None, 400, "key"),
    ("missing-bucket", json.dumps({"key": USER_KEY}), "application/json", None, 400, "bucket"),
    ("invalid-bucket", json.dumps({"bucket": "Bad_Bucket", "key": "k"}), "application/json", None, 400, "invalid bucket"),
    ("control-character-key", json.dumps({"bucket": USER_BUCKET, "key": "a\u0000b"}), "application/json", None, 400, "control"),
    ("s3-uri-not-s3", json.dumps({"s3_uri": "https://example.com/x.jpg"}), "application/json", None, 400, "s3_uri"),
    ("s3-uri-and-bucket", json.dumps({"s3_uri": SOURCE, "bucket": USER_BUCKET}), "application/json", None, 400, "not both"),
    ("empty-json-body", "", "application/json", None, 400, "empty"),
    ("malformed-json", "{", "application/json", None, 400, "not valid JSON"),
    ("json-scalar", "42", "application/json", None, 400, "JSON object"),
    ("nested-junk", json.dumps({"bucket": {"a": [1, {"b": None}]}, "key": "k"}), "application/json", None, 400, "bucket"),
    ("deeply-nested", DEEP, "application/json", None, 400, "nested too deeply"),
    ("too-many-images", json.dumps([json.loads(body())] * 1001), "application/json", None, 413, "1001 images"),
    ("empty-array", "[]", "application/json", None, 400, "no images"),
    ("unknown-class", body(classes=["unicorn"]), "application/json", None, 400, "unicorn"),
    ("classes-not-list", body(classes="person"), "application/json", None, 400, "classes"),
    ("invalid-utf8-json", b'{"bucket": "\xff"}', "application/json; charset=utf-8", None, 400, "UTF-8"),
    ("empty-csv", "  \n ", "text/csv", None, 400, "empty"),
    ("csv-http-url", "https://example.com/x.jpg", "text/csv", None, 400, "unsupported location"),
    ("csv-bucket-only", USER_BUCKET, "text/csv", None, 400, "key"),
    ("unsupported-content-type", "hello", "text/plain", None, 415, "text/plain"),
    ("unsupported-accept", body(), "application/json", "text/html", 406, "text/html"),
    ("forbidden-bucket", json.dumps({"bucket": "someone-elses", "key": "k.jpg"}), "application/json", None, 403, "ALLOWED_BUCKETS"),
    ("missing-object", json.dumps({"bucket": USER_BUCKET, "key": "nope.jpg"}), "application/json", None, 404, "does not exist"),
    ("missing-bucket-on-s3", "allowed-but-missing/k.jpg", "text/csv", None, 404, "does not exist"),
    ("unicode-key-missing", json.dumps({"bucket": USER_BUCKET, "key": "données/フレーム.jpg"}), "application/json", None, 404, "フレーム"),
    ("zero-byte-object", f"{USER_BUCKET}/bad/zero.jpg", "text/csv", None, 400, "empty"),
    ("truncated-jpeg", f"{USER_BUCKET}/bad/truncated.jpg", "text/csv", None, 400, "could not be decoded"),
    ("not-an-image", f"{USER_BUCKET}/bad/text.jpg", "text/csv", None, 400, "not a decodable image"),
    ("png-claims-60000x60000", f"{USER_BUCKET}/bad/huge-header.png", "text/csv", None, 413, "pixels"),
    ("object-too-large", f"{USER_BUCKET}/bad/too-many-bytes.jpg", "text/csv", None, 413, "bytes"),
    ("raw-image-empty", b"", "image/jpeg", None, 400, "empty"),
    ("raw-image-junk", b"\x00\x01junk" * 10, "image/png", None, 400, "not a decodable image"),
    ("raw-image-60000x60000", png_claiming(60000, 60000), "image/png", None, 413, "pixels"),
]


@pytest.mark.parametrize("payload, content_type, accept, status, words",
                         [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_its_status_and_a_clear_message(toolkit, payload, content_type, accept, status, words):
    response = toolkit.invoke(payload, content_type, accept)
    assert response.status == status, response.message
    assert words in response.message
    assert toolkit.invoke(body(), "application/json").status == 200


def test_s3_access_denied_is_403(s3_server):
    from localrun.s3server import NO_READ

    with pytest.raises(Exception) as raised:
        fetch_object(s3_server.client(NO_READ), USER_BUCKET, USER_KEY, MAX_IMAGE_BYTES)
    assert raised.value.status_code == 403 and "denied" in raised.value.message


def test_s3_unreachable_is_503():
    import boto3
    from botocore.config import Config

    from localrun.s3server import free_port

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}", aws_access_key_id="x",
                          aws_secret_access_key="y", region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(Exception) as raised:
        fetch_object(client, USER_BUCKET, USER_KEY, MAX_IMAGE_BYTES)
    assert raised.value.status_code == 503 and "S3" in raised.value.message
