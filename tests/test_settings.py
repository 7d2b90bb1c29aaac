"""Configuration: a bad value stops start-up with a message naming the variable and what it allows."""

from __future__ import annotations

import json

import pytest

from request_handling.settings import ConfigurationError, Settings, load_settings


@pytest.mark.parametrize("name, value, allowed", [
    ("EFFICIENTDET_COMPOUND_COEF", "9", "from 0 to 8"),
    ("EFFICIENTDET_COMPOUND_COEF", "d0", "from 0 to 8"),
    ("EFFICIENTDET_INPUT_SIZE", "500", "multiple of 128"),
    ("EFFICIENTDET_WEIGHTS", "../elsewhere.pth", "file name inside the model dir"),
    ("DEFAULT_PRED_THRESHOLD", "1.5", "[0.0, 1.0]"),
    ("DEFAULT_IOU_THRESHOLD", "nan", "[0.0, 1.0]"),
    ("DEFAULT_MAX_DETECTIONS", "0", ">= 1"),
    ("USE_FLOAT16", "yes", "true, false, 1, 0"),
    ("JPEG_REDUCED_DECODE", "on", "true, false, 1, 0"),
    ("MAX_IMAGE_BYTES", "-1", ">= 1"),
    ("BATCH_SIZE", "1000", "from 1 to 256"),
])
def test_bad_variable_is_named_with_allowed_values(tmp_path, name, value, allowed):
    with pytest.raises(ConfigurationError) as raised:
        load_settings(tmp_path, {name: value})
    assert name in str(raised.value) and allowed in str(raised.value)


def test_defaults_and_overrides(tmp_path):
    settings = load_settings(tmp_path, {"EFFICIENTDET_COMPOUND_COEF": "8", "ALLOWED_BUCKETS": " a-bucket, b-bucket ,",
                                        "USE_FLOAT16": "1", "DEFAULT_PRED_THRESHOLD": "0.35"})
    assert (settings.compound_coef, settings.weights, settings.input_size) == (8, "efficientdet-d8.pth", 1536)
    assert settings.allowed_buckets == {"a-bucket", "b-bucket"} and settings.use_float16
    assert settings.pred_threshold == 0.35 and settings.iou_threshold == Settings.iou_threshold == 0.2
    assert load_settings(tmp_path, {"EFFICIENTDET_INPUT_SIZE": "1024"}).input_size == 1024


def test_model_dir_config_for_custom_models(tmp_path):
    (tmp_path / "efficientdet.json").write_text(json.dumps(
        {"compound_coef": 2, "labels": ["face"], "anchor_scales": [1.0, 1.5], "anchor_ratios": [[1.0, 1.0]]}))
    settings = load_settings(tmp_path, {})
    assert (settings.compound_coef, settings.labels, settings.anchor_ratios) == (2, ("face",), ((1.0, 1.0),))
    with pytest.raises(ConfigurationError, match="contradicts"):
        load_settings(tmp_path, {"EFFICIENTDET_COMPOUND_COEF": "3"})
    (tmp_path / "efficientdet.json").write_text(json.dumps({"labelz": []}))
    with pytest.raises(ConfigurationError, match="labelz"):
        load_settings(tmp_path, {})


def test_model_fn_refuses_to_start_on_a_bad_value(tmp_path, monkeypatch):
    import inference

    monkeypatch.setenv("DEFAULT_IOU_THRESHOLD", "2")
    with pytest.raises(ConfigurationError, match="DEFAULT_IOU_THRESHOLD"):
        inference.model_fn(str(tmp_path))
