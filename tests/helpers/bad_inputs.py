"""Bad requests and the status and message words each must get: shared by the handler and HTTP suites."""

from __future__ import annotations

import json
import re

from helpers import USER_BUCKET, USER_KEY
from helpers.images import encode, gradient, png_claiming

ALLOWED = f"{USER_BUCKET},allowed-but-missing"  # ALLOWED_BUCKETS of the servers under test
MAX_IMAGE_BYTES = 2_000_000  # MAX_IMAGE_BYTES of the servers under test
SOURCE = f"s3://{USER_BUCKET}/{USER_KEY}"


ERROR_MEDIA_TYPE = "text/plain; charset=utf-8"  # both images' error bodies (README: requests and errors)
TRACEBACK_TRACES = re.compile(r'Traceback|File "|\.py\b|site-packages')


def assert_one_line_error(text: str, content_type: str | None) -> None:
    """An error body as both images answer it: one line of text/plain, no traceback, no file path."""
    assert content_type == ERROR_MEDIA_TYPE
    assert text.endswith("\n") and text.count("\n") == 1, text[:500]
    assert TRACEBACK_TRACES.search(text) is None, text[:500]


def body(**fields) -> str:
    return json.dumps({"bucket": USER_BUCKET, "key": USER_KEY, **fields})


def upload_bad_objects(s3_server) -> None:
    s3_server.put(USER_BUCKET, "bad/zero.jpg", b"")
    jpeg = encode(gradient(), "JPEG")
    s3_server.put(USER_BUCKET, "bad/truncated.jpg", jpeg[: len(jpeg) // 2])
    s3_server.put(USER_BUCKET, "bad/text.jpg", b"this is not an image\n")
    s3_server.put(USER_BUCKET, "bad/huge-header.png", png_claiming(60000, 60000))
    s3_server.put(USER_BUCKET, "bad/too-many-bytes.jpg", b"\xff" * (MAX_IMAGE_BYTES + 1))


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
    ("bucket-as-ip-address", json.dumps({"bucket": "192.168.5.4", "key": "k.jpg"}), "application/json", None, 400, "IP address"),
    ("bucket-punycode-prefix", "xn--bcher-kva/k.jpg", "text/csv", None, 400, "'xn--' is reserved"),
    ("bucket-access-point-alias", json.dumps({"s3_uri": "s3://frames-s3alias/k.jpg"}), "application/json", None, 400, "'-s3alias' is reserved"),
    ("bucket-adjacent-dots", json.dumps({"bucket": "frames..2026", "key": "k.jpg"}), "application/json", None, 400, "adjacent dots"),
    ("bucket-leading-hyphen", json.dumps({"bucket": "-frames", "key": "k.jpg"}), "application/json", None, 400, "starting and ending"),
    ("bucket-trailing-hyphen", json.dumps({"bucket": "frames-", "key": "k.jpg"}), "application/json", None, 400, "starting and ending"),
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
    ("binary-junk-as-csv", bytes(range(256)) * 4, "text/csv", None, 400, "UTF-8"),
    ("latin-1-json", '{"bucket": "videoblocks-ml", "key": "caf\u00e9.jpg"}'.encode("latin-1"), "application/json", None, 400, "UTF-8"),
    ("lone-surrogate-key", json.dumps({"bucket": USER_BUCKET, "key": "\ud800"}), "application/json", None, 400, "surrogate"),
    ("dot-segment-key", json.dumps({"bucket": USER_BUCKET, "key": "../other-bucket/x.jpg"}), "application/json", None, 400, "segment"),
    ("threshold-310-digit-integer", body()[:-1] + ', "pred_threshold": 1' + "0" * 310 + "}", "application/json", None, 400, "pred_threshold"),
    ("bidi-key-missing", json.dumps({"bucket": USER_BUCKET, "key": "a\u202egpj.exe"}), "application/json", None, 404, "a\\u202egpj.exe"),
    ("huge-content-type", "hello", "text/" + "x" * 5000, None, 415, "unsupported content type"),
    ("accept-checked-before-s3", json.dumps({"bucket": USER_BUCKET, "key": "nope.jpg"}), "application/json", "text/html", 406, "text/html"),
    ("all-entries-missing", json.dumps([{"bucket": USER_BUCKET, "key": "nope-1.jpg"}, {"bucket": USER_BUCKET, "key": "nope-2.jpg"}]), "application/json", None, 404, "nope-1.jpg"),
    ("all-lines-undecodable", f"{USER_BUCKET}/bad/text.jpg\n{USER_BUCKET}/nope.jpg", "text/csv", None, 400, "not a decodable image"),
    ("response-too-large", json.dumps([json.loads(body(max_detections=10_000))] * 11), "application/json", None, 413, "MAX_DETECTIONS_PER_REQUEST"),
    ("ten-thousand-line-csv", "\n".join([f"{USER_BUCKET}/{USER_KEY}"] * 10_000), "text/csv", None, 413, "10000 images"),
]
