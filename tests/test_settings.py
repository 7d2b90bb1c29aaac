"""Configuration: a bad value stops start-up with a message naming the variable and what it allows."""

from __future__ import annotations

import json
import re

import pytest

from request_handling import settings as settings_module
from request_handling.settings import ConfigurationError, Settings, load_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name, value, allowed", [
    ("EFFICIENTDET_COMPOUND_COEF", "9", "from 0 to 8"),
    ("EFFICIENTDET_COMPOUND_COEF", "d0", "from 0 to 8"),
    ("EFFICIENTDET_INPUT_SIZE", "500", "multiple of 128"),
    ("EFFICIENTDET_WEIGHTS", "../elsewhere.pth", "file name inside the model dir"),
    ("DEFAULT_PRED_THRESHOLD", "1.5", "[0.0, 1.0]"),
    ("DEFAULT_IOU_THRESHOLD", "nan", "[0.0, 1.0]"),
    ("DEFAULT_MAX_DETECTIONS", "0", ">= 1"),
    ("USE_FLOAT16", "yes", "true, false, 1, 0"),
    ("CPU_PRECISION", "float16", "float32, bfloat16"),
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


def test_cpu_bfloat16_is_refused_at_start_up_on_a_cpu_without_it(tmp_path, monkeypatch):
    """The CPU's capability is faked here: the fast-tier machines may have native bfloat16 or not."""
    monkeypatch.setattr(settings_module, "native_bfloat16", lambda: False)
    monkeypatch.setattr(settings_module.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigurationError) as raised:
        load_settings(tmp_path, {"CPU_PRECISION": "bfloat16"})
    assert "CPU_PRECISION=bfloat16" in str(raised.value) and "AVX-512 BF16 or AMX" in str(raised.value)
    assert not load_settings(tmp_path, {"CPU_PRECISION": "float32"}).cpu_bfloat16
    monkeypatch.setattr(settings_module, "native_bfloat16", lambda: True)
    assert load_settings(tmp_path, {"CPU_PRECISION": "BFloat16"}).cpu_bfloat16
    assert not load_settings(tmp_path, {}).cpu_bfloat16


def test_workers_and_their_threads_default_to_torchserves_count(monkeypatch):
    """The machine is faked: 8 cores, and 4 GPUs or none. TorchServe starts a worker per GPU, else per core."""
    monkeypatch.setattr(settings_module.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(settings_module.torch.cuda, "is_available", lambda: False)
    assert (settings_module.model_server_workers({}), settings_module.default_num_threads({})) == (8, 1)
    monkeypatch.setattr(settings_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(settings_module.torch.cuda, "device_count", lambda: 4)
    assert (settings_module.model_server_workers({}), settings_module.default_num_threads({})) == (4, 2)
    assert settings_module.default_num_threads({"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}) == 8
    assert settings_module.default_num_threads({"EFFICIENTDET_NUM_THREADS": "3"}) == 3


def test_model_dir_config_for_custom_models(tmp_path):
    (tmp_path / "efficientdet.json").write_text(json.dumps(
        {"compound_coef": 2, "labels": ["face"], "anchor_scales": [1.0, 1.5], "anchor_ratios": [[1.0, 1.0]]}))
    settings = load_settings(tmp_path, {})
    assert (settings.compound_coef, settings.labels, settings.anchor_ratios) == (2, ("face",), ((1.0, 1.0),))
    with pytest.raises(ConfigurationError, match="set differently"):
        load_settings(tmp_path, {"EFFICIENTDET_COMPOUND_COEF": "3"})
    (tmp_path / "efficientdet.json").write_text(json.dumps({"labelz": []}))
    with pytest.raises(ConfigurationError, match="labelz"):
        load_settings(tmp_path, {})


def test_model_fn_refuses_to_start_on_a_bad_value(tmp_path, monkeypatch):
    pytest.importorskip("sagemaker_inference", reason="inference.py is the TorchServe image's entry point")
    import inference

    monkeypatch.setenv("DEFAULT_IOU_THRESHOLD", "2")
    with pytest.raises(ConfigurationError, match="DEFAULT_IOU_THRESHOLD"):
        inference.model_fn(str(tmp_path))


def test_efficientdet_version_is_an_alias_of_the_coefficient(tmp_path):
    """The original deployment notes call it EFFICIENTDET_VERSION: it must not silently serve D0."""
    assert load_settings(tmp_path, {"EFFICIENTDET_VERSION": "4"}).compound_coef == 4
    assert load_settings(tmp_path, {"EFFICIENTDET_VERSION": "4", "EFFICIENTDET_COMPOUND_COEF": "4"}).compound_coef == 4
    with pytest.raises(ConfigurationError) as raised:
        load_settings(tmp_path, {"EFFICIENTDET_VERSION": "4", "EFFICIENTDET_COMPOUND_COEF": "2"})
    assert "EFFICIENTDET_VERSION (4)" in str(raised.value) and "EFFICIENTDET_COMPOUND_COEF (2)" in str(raised.value)
    with pytest.raises(ConfigurationError, match="EFFICIENTDET_VERSION"):
        load_settings(tmp_path, {"EFFICIENTDET_VERSION": "d4"})


@pytest.mark.parametrize("value, words", [
    (",", "names no bucket"),
    (" , ,", "names no bucket"),
    ("s3://videoblocks-ml", "no s3:// prefix"),
    ("VideoBlocks-ML", "'VideoBlocks-ML' is not a bucket name"),
    ("videoblocks-ml,bad_bucket", "'bad_bucket'"),
])
def test_allowed_buckets_that_would_fail_open_or_match_nothing_refuse_to_start(tmp_path, value, words):
    with pytest.raises(ConfigurationError) as raised:
        load_settings(tmp_path, {"ALLOWED_BUCKETS": value})
    assert "ALLOWED_BUCKETS" in str(raised.value) and words in str(raised.value)


def test_input_size_has_an_upper_bound_named_where_it_was_set(tmp_path):
    with pytest.raises(ConfigurationError, match="EFFICIENTDET_INPUT_SIZE=4096 .* from 128 to 2048"):
        load_settings(tmp_path, {"EFFICIENTDET_INPUT_SIZE": "4096"})
    (tmp_path / "efficientdet.json").write_text(json.dumps({"input_size": 4096}))
    with pytest.raises(ConfigurationError, match="input_size in efficientdet.json=4096"):
        load_settings(tmp_path, {})


@pytest.mark.parametrize("field, value, words", [
    ("untrained", "no", "untrained must be true or false"),
    ("compound_coef", "4", "compound_coef must be an integer from 0 to 8"),
    ("compound_coef", True, "compound_coef must be an integer from 0 to 8"),
    ("input_size", 512.0, "input_size must be an integer"),
    ("weights", 7, "weights must be a file name"),
    ("weights", "../x.pth", "weights must be a file name"),
    ("labels", ["face", 1], "labels must be a list of strings"),
    ("anchor_ratios", [[1.0]], "anchor_ratios must be a non-empty list of [x, y] pairs"),
])
def test_model_dir_config_type_errors_name_the_field(tmp_path, field, value, words):
    (tmp_path / "efficientdet.json").write_text(json.dumps({field: value}))
    with pytest.raises(ConfigurationError, match=re.escape(words)):
        load_settings(tmp_path, {})


def test_request_timeout_fits_sagemakers_realtime_limit_by_default(tmp_path):
    settings = load_settings(tmp_path, {})
    worst_s3_fetch = settings.s3_max_attempts * (settings.s3_connect_timeout + settings.s3_read_timeout)
    assert settings.request_timeout <= 30 < 60 and worst_s3_fetch < settings.request_timeout
    assert load_settings(tmp_path, {"REQUEST_TIMEOUT": "3000"}).request_timeout == 3000
    with pytest.raises(ConfigurationError, match="REQUEST_TIMEOUT"):
        load_settings(tmp_path, {"REQUEST_TIMEOUT": "0"})
