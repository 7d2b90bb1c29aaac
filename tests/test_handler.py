"""inference.py through the real sagemaker-pytorch-inference HandlerService, against SeaweedFS S3."""

from __future__ import annotations

import json
import logging

import pytest
from helpers import USER_BUCKET, USER_KEY
from helpers.bad_inputs import (
    ALLOWED,
    BAD_INPUTS,
    MAX_IMAGE_BYTES,
    SOURCE,
    assert_one_line_error,
    body,
    upload_bad_objects,
)
from helpers.images import encode, gradient, sixteen_bit_png, video_frame
from helpers.matching import unmatched
from helpers.toolkit import Toolkit

from efficientdet import Detector
from efficientdet.layers import native_bfloat16
from request_handling.images import decode_image
from request_handling.media import fetch_media

pytestmark = pytest.mark.production


@pytest.fixture(scope="module")
def toolkit(s3_server, untrained_model_dir):
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3_server.env().items():
            env.setenv(name, value)
        env.setenv("ALLOWED_BUCKETS", ALLOWED)
        env.setenv("MAX_IMAGE_BYTES", str(MAX_IMAGE_BYTES))
        env.setenv("S3_READ_TIMEOUT", "5")
        upload_bad_objects(s3_server)
        yield Toolkit(untrained_model_dir)


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
    (encode(gradient(), "GIF"), "image/gif"),
    (encode(gradient(), "WEBP"), "image/webp"),
    (encode(gradient(), "TIFF"), "image/tiff"),
    (encode(gradient(), "BMP"), "image/bmp"),
    (encode(gradient(), "WEBP"), "application/x-image"),
], ids=["grayscale", "cmyk", "alpha", "16-bit", "gif", "webp", "tiff", "bmp", "any-image"])
def test_image_modes_are_converted_not_refused(toolkit, image, content_type):
    response = toolkit.invoke(image, content_type)
    assert response.status == 200, response.message
    result = response.json()
    assert result["width"] > 0 and result["height"] > 0


def test_reduced_jpeg_decode_keeps_the_full_size():
    decoded = decode_image(video_frame(1920, 1080), 10**8, 10**8, reduce_to=512)
    assert decoded.pixels.shape == (540, 960, 3) and (decoded.width, decoded.height) == (1920, 1080)
    rotated = decode_image(video_frame(1920, 1080, orientation=6), 10**8, 10**8, reduce_to=512)
    assert rotated.pixels.shape == (960, 540, 3) and (rotated.width, rotated.height) == (1080, 1920)
    small = decode_image(video_frame(600, 400), 10**8, 10**8, reduce_to=512)
    assert small.pixels.shape == (400, 600, 3)
    png = decode_image(encode(gradient(1920, 1080), "PNG"), 10**8, 10**8, reduce_to=512)
    assert png.pixels.shape == (1080, 1920, 3)


def test_jpeg_reduced_decode_answers_in_full_image_pixels(reference_model_dir, monkeypatch):
    frame = video_frame(3840, 2160)
    monkeypatch.setenv("JPEG_REDUCED_DECODE", "true")
    result = Toolkit(reference_model_dir).invoke(frame, "image/jpeg").json()
    assert (result["width"], result["height"]) == (3840, 2160)
    reduced = decode_image(frame, 10**8, 10**8, reduce_to=512)
    assert reduced.pixels.shape == (540, 960, 3)
    detector = Detector.from_checkpoint(reference_model_dir / "efficientdet-d0.pth", 0)
    expected = detector.detect([reduced.pixels], full_sizes=[(3840, 2160)])[0]
    assert expected and unmatched(expected, result["detections"], 3840, 2160) == []


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_cpu_precision_bfloat16_serves_the_bfloat16_detections(reference_model_dir, monkeypatch):
    """CPU_PRECISION=bfloat16 through the toolkit: the answer is the bfloat16 Detector's own."""
    monkeypatch.setenv("CPU_PRECISION", "bfloat16")
    image = encode(gradient(640, 480), "PNG")
    result = Toolkit(reference_model_dir).invoke(image, "image/png").json()
    detector = Detector.from_checkpoint(reference_model_dir / "efficientdet-d0.pth", 0, bfloat16=True)
    expected = detector.detect([decode_image(image, 10**8, 10**8).pixels])[0]
    assert expected and unmatched(expected, result["detections"], 640, 480) == []


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
    import request_handling.s3
    import request_handling.service

    loads, clients = [], []
    original = request_handling.service.DetectionService.load.__func__
    monkeypatch.setattr(request_handling.service.DetectionService, "load",
                        classmethod(lambda cls, *a: loads.append(a) or original(cls, *a)))
    make_client = request_handling.s3.make_client
    monkeypatch.setattr(request_handling.s3, "make_client", lambda *a: clients.append(a) or make_client(*a))
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    handler = Toolkit(untrained_model_dir)
    statuses = [handler.invoke(f"{USER_BUCKET}/{USER_KEY}", "text/csv").status for _ in range(50)]
    assert statuses == [200] * 50
    assert len(loads) == 1 and len(clients) == 1


def test_a_csv_body_with_a_byte_order_mark(toolkit):
    response = toolkit.invoke(f"\ufeff{USER_BUCKET}/{USER_KEY}\r\n".encode(), "text/csv")
    assert response.status == 200
    assert_detection_schema(response.json(), SOURCE)


@pytest.mark.parametrize("width, height", [(1, 600), (600, 1), (1, 1)])
def test_thin_and_flat_images_answer_200(toolkit, width, height):
    strip = encode(gradient(width, height), "PNG")
    response = toolkit.invoke(strip, "image/png")
    assert response.status == 200, response.message
    result = response.json()
    assert (result["width"], result["height"]) == (width, height)
    for d in result["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_a_thin_image_does_not_sink_its_neighbours(toolkit, s3_server):
    s3_server.put(USER_BUCKET, "thin/strip.png", encode(gradient(1, 600), "PNG"))
    response = toolkit.invoke(f"{USER_BUCKET}/{USER_KEY}\n{USER_BUCKET}/thin/strip.png", "text/csv")
    assert response.status == 200
    assert [("detections" in r) for r in response.json()] == [True, True]


def test_one_usable_entry_among_failures_answers_200(toolkit):
    lines = [f"{USER_BUCKET}/nope.jpg", f"{USER_BUCKET}/bad/text.jpg", f"{USER_BUCKET}/{USER_KEY}"]
    response = toolkit.invoke("\n".join(lines), "text/csv")
    assert response.status == 200
    assert [r.get("error", {}).get("status") for r in response.json()] == [404, 400, None]


@pytest.mark.parametrize("payload, content_type, accept, status, words",
                         [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_its_status_and_a_clear_message(toolkit, payload, content_type, accept, status, words):
    response = toolkit.invoke(payload, content_type, accept)
    assert response.status == status, response.message
    assert words in response.message
    assert_one_line_error(response.body, response.content_type)
    assert toolkit.invoke(body(), "application/json").status == 200


def test_s3_access_denied_is_403(s3_server):
    from localrun.s3server import NO_READ

    with pytest.raises(Exception) as raised:
        fetch_media(s3_server.client(NO_READ), USER_BUCKET, USER_KEY, MAX_IMAGE_BYTES, MAX_IMAGE_BYTES)
    assert raised.value.status_code == 403 and "denied" in raised.value.message


def test_s3_unreachable_is_503():
    import boto3
    from botocore.config import Config

    from localrun.ports import free_port

    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}", aws_access_key_id="x",
                          aws_secret_access_key="y", region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(Exception) as raised:
        fetch_media(client, USER_BUCKET, USER_KEY, MAX_IMAGE_BYTES, MAX_IMAGE_BYTES)
    assert raised.value.status_code == 503 and "S3" in raised.value.message


def test_custom_attributes_set_options_for_raw_image_bytes(toolkit, reference):
    png = (reference / "coffee.png").read_bytes()
    everything = toolkit.invoke(png, "image/png", headers={"X-Amzn-SageMaker-Custom-Attributes": "pred_threshold=0.01"})
    limited = toolkit.invoke(png, "image/png",
                             headers={"x-amzn-sagemaker-custom-attributes": "pred_threshold=0.01,max_detections=2"})
    assert everything.status == limited.status == 200
    assert everything.json()["pred_threshold"] == 0.01 and len(everything.json()["detections"]) > 2
    assert limited.json()["detections"] == everything.json()["detections"][:2]


def test_a_json_bodys_own_fields_win_over_custom_attributes(toolkit):
    response = toolkit.invoke(body(pred_threshold=0.5), headers={
        "X-Amzn-SageMaker-Custom-Attributes": "pred_threshold=0.01,iou_threshold=0.6"})
    assert response.status == 200 and (response.json()["pred_threshold"], response.json()["iou_threshold"]) == (0.5, 0.6)


def test_a_bad_custom_attribute_is_400_naming_it(toolkit):
    response = toolkit.invoke(body(), headers={"X-Amzn-SageMaker-Custom-Attributes": "pred_treshold=0.3"})
    assert response.status == 400 and "pred_treshold" in response.message


@pytest.mark.parametrize("response_format, key", [("sagemaker-object-detection", "prediction"), ("rekognition", "Labels")])
def test_drop_in_response_formats(toolkit, response_format, key):
    response = toolkit.invoke(body(pred_threshold=0.01), accept=f"application/json; format={response_format}")
    assert response.status == 200 and response.content_type == "application/json"
    assert set(response.json()) >= {key} and response.json()[key]


def test_an_unexpected_exception_answers_500_in_one_line_and_logs_its_traceback(toolkit, monkeypatch, caplog):
    from request_handling import contract

    def broken(*args):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(contract, "parse_request", broken)
    with caplog.at_level(logging.INFO, logger="efficientdet.serving"):
        response = toolkit.invoke(body(), "application/json")
    assert response.status == 500
    assert response.message == "internal error (ZeroDivisionError); the endpoint's log has the details"
    assert_one_line_error(response.body, response.content_type)
    assert "Traceback" in caplog.text and "a bug of ours" in caplog.text
    monkeypatch.undo()
    assert toolkit.invoke(body(), "application/json").status == 200


def test_a_client_error_logs_one_line_without_a_traceback(toolkit, caplog):
    with caplog.at_level(logging.INFO, logger="efficientdet.serving"):
        response = toolkit.invoke(body(pred_threshold=10), "application/json")
    assert response.status == 400
    assert "request failed status=400: pred_threshold" in caplog.text and "Traceback" not in caplog.text
