"""Fast tier: request bodies, error lines and the letterbox rule, without a server, S3 or a model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from efficientdet.preprocess import letterbox, letterbox_size
from request_handling.bodies import EntryRequest, parse_request
from request_handling.errors import RequestError, bad_request
from request_handling.responses import negotiate

pytestmark = pytest.mark.unit

LOCATION = "videoblocks-ml/frames/000216-9.0090.jpg"


def parse(body, content_type="application/json"):
    return parse_request(body, content_type)


def error_of(body, content_type="application/json") -> RequestError:
    with pytest.raises(RequestError) as raised:
        parse(body, content_type)
    return raised.value


@pytest.mark.parametrize("body", [("\ufeff" + LOCATION).encode(), "\ufeff" + LOCATION])
def test_a_csv_body_with_a_byte_order_mark_reads_as_without(body):
    assert parse(body, "text/csv") == ([EntryRequest("videoblocks-ml", "frames/000216-9.0090.jpg")], False)


def test_a_json_body_with_a_byte_order_mark_reads_as_without():
    requests, _ = parse(("\ufeff" + json.dumps({"s3_uri": f"s3://{LOCATION}"})).encode())
    assert requests[0].bucket == "videoblocks-ml"


def test_json_lines_split_on_line_feeds_only():
    """U+2028 and U+0085 may sit inside a JSON string; only CR and LF end a record."""
    lines = [json.dumps({"bucket": "videoblocks-ml", "key": f"a\u2028b\x85c-{i}.jpg"}, ensure_ascii=False)
             for i in range(2)]
    requests, several = parse("\r\n".join(lines).encode(), "application/jsonlines")
    assert several and [r.key for r in requests] == ["a\u2028b\x85c-0.jpg", "a\u2028b\x85c-1.jpg"]


@pytest.mark.parametrize("key, words", [
    ("\ud800", "lone surrogate"),
    ("../other-bucket/x.jpg", "'..' path segment"),
    ("frames/./x.jpg", "'..' path segment"),
    ("frames/..", "'..' path segment"),
])
def test_keys_s3_cannot_take_safely_are_400(key, words):
    error = error_of(json.dumps({"bucket": "videoblocks-ml", "key": key}))
    assert error.status_code == 400 and words in error.message


def test_keys_with_dots_inside_names_are_fine():
    requests, _ = parse(json.dumps({"bucket": "videoblocks-ml", "key": "a..b/.hidden/x.jpg"}))
    assert requests[0].key == "a..b/.hidden/x.jpg"


@pytest.mark.parametrize("value", ["1" + "0" * 309, "-" + "9" * 400, "2"])
def test_huge_integer_thresholds_are_400_not_overflow(value):
    body = json.dumps({"bucket": "videoblocks-ml", "key": "k.jpg"})[:-1] + f', "pred_threshold": {value}}}'
    error = error_of(body)
    assert error.status_code == 400 and "pred_threshold" in error.message


def test_integer_thresholds_zero_and_one_are_accepted():
    requests, _ = parse(json.dumps({"bucket": "videoblocks-ml", "key": "k.jpg", "pred_threshold": 0,
                                    "iou_threshold": 1}))
    assert (requests[0].pred_threshold, requests[0].iou_threshold) == (0.0, 1.0)


@pytest.mark.parametrize("text", ["evil\r\nX-Injected: 1", "a\u2028b", "a\u2029b", "a\x85b", "a\u202eb", "a\u2066b",
                                  "a\x1bb", "a\u200fb"])
def test_error_messages_are_one_line_with_no_control_or_bidi_characters(text):
    message = bad_request(f"key {text!s} is wrong").message
    assert len(message.splitlines()) == 1
    assert all(c.isprintable() for c in message), ascii(message)


def test_error_messages_are_bounded():
    assert len(bad_request("x" * 5000).message) == 500


@pytest.mark.parametrize("content_type", ["video/mp4", "video/quicktime", "video/x-m4v", "video/3gpp", "video/webm",
                                          "video/x-matroska", "video/mp2t", "video/mpeg", "video/x-msvideo",
                                          "application/mxf", "video/x-flv", "video/ogg", "video/x-ms-wmv",
                                          "video/x-ms-asf", "video/dv"])
def test_every_container_the_server_reads_may_be_sent_as_its_own_type(content_type):
    """The body is the clip, whatever its registered type; its bytes decide what it is."""
    parsed = parse(b"\x00\x00\x00\x18ftypmp42", content_type)
    assert not parsed.several and parsed.entries[0].inline.startswith(b"\x00\x00\x00\x18ftyp")


def test_a_huge_content_type_is_not_echoed_whole():
    error = error_of("hello", "text/" + "x" * 5000)
    assert error.status_code == 415 and len(error.message) < 300
    with pytest.raises(RequestError) as raised:
        negotiate("text/" + "y" * 5000)
    assert raised.value.status_code == 406 and len(raised.value.message) < 300


@pytest.mark.parametrize("width, height", [(1, 600), (600, 1), (1, 1), (3, 5000), (5000, 3)])
def test_thin_and_flat_images_keep_at_least_one_pixel(width, height):
    resized = letterbox_size(width, height, 512)
    assert min(resized) >= 1 and max(resized) == 512
    canvas, placement = letterbox(np.full((height, width, 3), 200, np.uint8), 512)
    assert canvas.shape == (512, 512, 3) and (placement.resized_width, placement.resized_height) == resized


def test_letterbox_size_follows_the_reference_rule():
    assert letterbox_size(600, 400, 512) == (512, 341) and letterbox_size(400, 600, 512) == (341, 512)
