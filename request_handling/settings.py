"""Handler configuration from the environment (and the model dir's optional efficientdet.json)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from efficientdet.config import MAX_INPUT_SIZE, get_config, validate_input_size
from efficientdet.detector import BFLOAT16_UNSUPPORTED
from efficientdet.layers import native_bfloat16

from .bodies import bucket_name_problem

MODEL_CONFIG_FILE = "efficientdet.json"
COEF_VARIABLE, COEF_ALIAS = "EFFICIENTDET_COMPOUND_COEF", "EFFICIENTDET_VERSION"


class ConfigurationError(ValueError):
    """A bad setting: the message names the variable and the values it allows."""


@dataclass(frozen=True)
class Settings:
    compound_coef: int = 0
    weights: str = "efficientdet-d0.pth"
    input_size: int = 512
    pred_threshold: float = 0.2
    iou_threshold: float = 0.2
    max_detections: int = 100
    use_float16: bool = False
    cpu_bfloat16: bool = False  # CPU_PRECISION=bfloat16
    cuda_graphs: bool = True
    onednn_graph: bool = True
    device_jpeg_decode: bool | None = None  # None: on when the model runs on a GPU
    jpeg_reduced_decode: bool = False
    allowed_buckets: frozenset[str] = frozenset()
    max_image_bytes: int = 50_000_000
    max_image_pixels: int = 100_000_000
    max_video_bytes: int = 1024**3  # of one clip: an inline one's size, or what is read of an S3 one (by byte ranges)
    max_video_frames: int = 1000
    max_images_per_request: int = 1000
    max_detections_per_request: int = 100_000
    max_request_bytes: int = 6_553_500  # TorchServe's own default; the Ray app enforces the same
    batch_size: int = 8
    request_batch_size: int = 8
    request_batch_wait_ms: float = 5.0
    request_timeout: float = 30.0
    s3_connect_timeout: float = 2.0
    s3_read_timeout: float = 7.0
    s3_max_attempts: int = 3
    s3_max_concurrency: int = 8
    labels: tuple[str, ...] | None = None
    anchor_scales: tuple[float, ...] | None = None
    anchor_ratios: tuple[tuple[float, float], ...] | None = None
    untrained: bool = False
    num_threads: int = 1
    parallel_batches: int = 1


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not valid: expected {allowed}") from None
    if value < low or (high is not None and value > high):
        raise ConfigurationError(f"{name}={raw!r} is not valid: expected {allowed}")
    return value


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigurationError(f"{name}={raw!r} is not valid: expected a number in [{low}, {high}]")
    return value


def _boolean(env: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise ConfigurationError(f"{name}={env[name]!r} is not valid: expected one of true, false, 1, 0")


CPU_PRECISIONS = ("float32", "bfloat16")


def cpu_bfloat16(env: Mapping[str, str]) -> bool:
    """CPU_PRECISION=bfloat16: the network in bfloat16 on CPU, refused at start-up on a CPU without native
    bfloat16; on a GPU the setting does not apply (USE_FLOAT16 does)."""
    raw = env.get("CPU_PRECISION", "").strip().lower() or "float32"
    if raw not in CPU_PRECISIONS:
        raise ConfigurationError(f"CPU_PRECISION={env['CPU_PRECISION']!r} is not valid: expected one of "
                                 + ", ".join(CPU_PRECISIONS))
    if raw == "bfloat16" and not torch.cuda.is_available() and not native_bfloat16():
        raise ConfigurationError(f"CPU_PRECISION=bfloat16 is not available here: {BFLOAT16_UNSUPPORTED}. "
                                 "Unset CPU_PRECISION for float32")
    return raw == "bfloat16"


def max_images_per_request(env: Mapping[str, str] = os.environ) -> int:
    return _integer(env, "MAX_IMAGES_PER_REQUEST", Settings.max_images_per_request, 1)


def default_batch_size() -> int:
    """Images per forward pass: on CPU one image at a time is fastest per image (bench/), on GPU 8."""
    return 8 if torch.cuda.is_available() else 1


def model_server_workers(env: Mapping[str, str] = os.environ) -> int:
    """SAGEMAKER_MODEL_SERVER_WORKERS: TorchServe workers, or Ray Serve replicas; by default TorchServe's own count,
    one per GPU, else one per core."""
    default = torch.cuda.device_count() if torch.cuda.is_available() else os.cpu_count() or 1
    return _integer(env, "SAGEMAKER_MODEL_SERVER_WORKERS", default, 1)


def default_num_threads(env: Mapping[str, str] = os.environ) -> int:
    """Torch threads per worker: the cores shared out among the model server's workers."""
    cores = os.cpu_count() or 1
    return _integer(env, "EFFICIENTDET_NUM_THREADS", max(1, cores // model_server_workers(env)), 1)


def default_parallel_batches(num_threads: int) -> int:
    """Forward passes one multi-image request may run at once: enough to use every core when it is
    the only request in flight (Batch Transform sends one mini-batch at a time by default)."""
    return 1 if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // num_threads)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value)


MODEL_CONFIG_TYPES = {  # field: (check, what it must be)
    "compound_coef": (lambda v: _is_integer(v) and 0 <= v <= 8, "an integer from 0 to 8"),
    "weights": (lambda v: isinstance(v, str) and bool(v) and Path(v).name == v, "a file name inside the model dir"),
    "labels": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "anchor_scales": (_is_number_list, "a non-empty list of numbers"),
    "anchor_ratios": (lambda v: isinstance(v, list) and bool(v) and all(_is_number_list(r) and len(r) == 2 for r in v),
                      "a non-empty list of [x, y] pairs"),
    "input_size": (_is_integer, "an integer"),
    "untrained": (lambda v: isinstance(v, bool), "true or false"),
}


def read_model_config(model_dir: str | os.PathLike) -> dict:
    """The optional efficientdet.json beside the checkpoint, validated field by field."""
    path = Path(model_dir) / MODEL_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConfigurationError(f"{path} must hold a JSON object")
    unknown = set(config) - set(MODEL_CONFIG_TYPES)
    if unknown:
        raise ConfigurationError(f"{path}: unknown field(s) {sorted(unknown)}; allowed: {sorted(MODEL_CONFIG_TYPES)}")
    for name, value in config.items():
        check, expected = MODEL_CONFIG_TYPES[name]
        if not check(value):
            raise ConfigurationError(f"{path}: {name} must be {expected}, got {json.dumps(value)[:60]}")
    return config


def compound_coef(env: Mapping[str, str], model_config: dict) -> int:
    """EFFICIENTDET_COMPOUND_COEF, or its alias EFFICIENTDET_VERSION (the original deployment notes'
    name), or efficientdet.json's compound_coef; ConfigurationError when two of them disagree."""
    given = {name: _integer(env, name, -1, 0, 8) for name in (COEF_VARIABLE, COEF_ALIAS) if env.get(name, "").strip()}
    if "compound_coef" in model_config:
        given[f"compound_coef in {MODEL_CONFIG_FILE}"] = model_config["compound_coef"]
    if len(set(given.values())) > 1:
        raise ConfigurationError("the compound coefficient is set differently by "
                                 + " and ".join(f"{name} ({value})" for name, value in given.items())
                                 + ": set one of them")
    return next(iter(given.values()), 0)


def allowed_buckets(env: Mapping[str, str]) -> frozenset[str]:
    """ALLOWED_BUCKETS as bucket names; a value that names no valid bucket refuses to start rather
    than quietly allowing every bucket (or none)."""
    raw = env.get("ALLOWED_BUCKETS", "")
    if not raw.strip():
        return frozenset()
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names:
        raise ConfigurationError(f"ALLOWED_BUCKETS={raw!r} names no bucket: leave it empty to allow every bucket, "
                                 "or list bucket names separated by commas")
    for name in names:
        problem = bucket_name_problem(name)
        if problem is not None:
            raise ConfigurationError(
                f"ALLOWED_BUCKETS={raw[:200]!r} is not valid: {name[:80]!r} is not a bucket name ({problem}); "
                "expected comma-separated bucket names, no s3:// prefix")
    return frozenset(names)


def load_settings(model_dir: str | os.PathLike, env: Mapping[str, str] = os.environ) -> Settings:
    """Settings for a model dir; ConfigurationError names the variable and its allowed values."""
    model_config = read_model_config(model_dir)
    coef = compound_coef(env, model_config)
    config = get_config(coef)
    weights = env.get("EFFICIENTDET_WEIGHTS", "").strip() or model_config.get("weights") or f"efficientdet-d{coef}.pth"
    if Path(weights).name != weights:
        raise ConfigurationError(f"EFFICIENTDET_WEIGHTS={weights!r} is not valid: expected a file name inside the model dir")
    input_size = _integer(env, "EFFICIENTDET_INPUT_SIZE", model_config.get("input_size", config.input_size), 1)
    try:
        validate_input_size(config, input_size)
    except ValueError:
        source = "EFFICIENTDET_INPUT_SIZE" if env.get("EFFICIENTDET_INPUT_SIZE", "").strip() else \
            f"input_size in {MODEL_CONFIG_FILE}"
        raise ConfigurationError(
            f"{source}={input_size} is not valid: expected a multiple of {config.size_multiple} "
            f"from {config.size_multiple} to {MAX_INPUT_SIZE}") from None
    ratios = model_config.get("anchor_ratios")
    num_threads = default_num_threads(env)
    default = Settings()
    return Settings(
        compound_coef=coef,
        weights=weights,
        input_size=input_size,
        pred_threshold=_number(env, "DEFAULT_PRED_THRESHOLD", default.pred_threshold, 0.0, 1.0),
        iou_threshold=_number(env, "DEFAULT_IOU_THRESHOLD", default.iou_threshold, 0.0, 1.0),
        max_detections=_integer(env, "DEFAULT_MAX_DETECTIONS", default.max_detections, 1),
        use_float16=_boolean(env, "USE_FLOAT16", default.use_float16),
        cpu_bfloat16=cpu_bfloat16(env),
        cuda_graphs=_boolean(env, "CUDA_GRAPHS", default.cuda_graphs),
        onednn_graph=_boolean(env, "ONEDNN_GRAPH", default.onednn_graph),
        device_jpeg_decode=_boolean(env, "DEVICE_JPEG_DECODE", default.device_jpeg_decode),
        jpeg_reduced_decode=_boolean(env, "JPEG_REDUCED_DECODE", default.jpeg_reduced_decode),
        allowed_buckets=allowed_buckets(env),
        max_image_bytes=_integer(env, "MAX_IMAGE_BYTES", default.max_image_bytes, 1),
        max_image_pixels=_integer(env, "MAX_IMAGE_PIXELS", default.max_image_pixels, 1),
        max_video_bytes=_integer(env, "MAX_VIDEO_BYTES", default.max_video_bytes, 1),
        max_video_frames=_integer(env, "MAX_VIDEO_FRAMES", default.max_video_frames, 1),
        max_images_per_request=max_images_per_request(env),
        max_request_bytes=_integer(env, "TS_MAX_REQUEST_SIZE", default.max_request_bytes, 1),
        max_detections_per_request=_integer(env, "MAX_DETECTIONS_PER_REQUEST", default.max_detections_per_request, 1),
        batch_size=_integer(env, "BATCH_SIZE", default_batch_size(), 1, 256),
        request_batch_size=_integer(env, "REQUEST_BATCH_SIZE", default.request_batch_size, 1, 256),
        request_batch_wait_ms=_number(env, "REQUEST_BATCH_WAIT_MS", default.request_batch_wait_ms, 0.0, 1000.0),
        request_timeout=_number(env, "REQUEST_TIMEOUT", default.request_timeout, 1.0, 86_400.0),
        s3_connect_timeout=_number(env, "S3_CONNECT_TIMEOUT", default.s3_connect_timeout, 0.1, 300.0),
        s3_read_timeout=_number(env, "S3_READ_TIMEOUT", default.s3_read_timeout, 0.1, 300.0),
        s3_max_attempts=_integer(env, "S3_MAX_ATTEMPTS", default.s3_max_attempts, 1, 10),
        s3_max_concurrency=_integer(env, "S3_MAX_CONCURRENCY", default.s3_max_concurrency, 1, 64),
        labels=tuple(model_config["labels"]) if "labels" in model_config else None,
        anchor_scales=tuple(model_config["anchor_scales"]) if "anchor_scales" in model_config else None,
        anchor_ratios=tuple(tuple(r) for r in ratios) if ratios else None,
        untrained=model_config.get("untrained", False),
        num_threads=num_threads,
        parallel_batches=_integer(env, "PARALLEL_BATCHES", default_parallel_batches(num_threads), 1, 64),
    )
