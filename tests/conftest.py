"""Shared fixtures: the reference data beside the clone, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samples import example

REPO = Path(__file__).resolve().parents[1]
# Tests talk to loopback only: botocore must not ask the EC2 instance metadata service for credentials when a
# test's environment has none (servers started by tests inherit this).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
REFERENCE = Path(os.environ.get("EFFICIENTDET_REFERENCE", REPO.parent / "shared" / "fixtures" / "reference"))


@pytest.fixture(scope="session")
def reference() -> Path:
    """../shared/fixtures/reference, or a skip when this clone has none beside it."""
    if not (REFERENCE / "efficientdet-d0.pth").is_file():
        pytest.skip(f"reference fixtures not found at {REFERENCE} (a user's clone has no ../shared)")
    return REFERENCE


@pytest.fixture(scope="session")
def coffee(reference: Path) -> np.ndarray:
    return np.asarray(Image.open(reference / "coffee.png").convert("RGB"))


USER_BUCKET, USER_KEY = example.BUCKET, example.KEY  # the users' example frame, as in the README and `make demo`
SAMPLE_IMAGE = REPO / "samples" / "coffee.jpg"


@pytest.fixture(scope="session")
def s3_server():
    """A real SeaweedFS S3 server on loopback holding the users' sample object."""
    from localrun.s3server import SeaweedS3

    with SeaweedS3() as server:
        server.put(USER_BUCKET, USER_KEY, SAMPLE_IMAGE.read_bytes())
        yield server


@pytest.fixture(scope="session")
def untrained_model_dir(tmp_path_factory) -> Path:
    """A read-only model dir as SageMaker unpacks it, with deterministic UNTRAINED D0 weights."""
    from deploy.model_dir import assemble_model_dir

    model_dir = assemble_model_dir(tmp_path_factory.mktemp("model") / "model", coef=0)
    yield model_dir
    make_writable(model_dir)


@pytest.fixture(scope="session")
def reference_model_dir(tmp_path_factory, reference) -> Path:
    """A read-only model dir holding the reference D0 checkpoint (deterministic, untrained, realistic scores)."""
    from deploy.model_dir import assemble_model_dir

    model_dir = assemble_model_dir(tmp_path_factory.mktemp("model") / "model", coef=0,
                                   weights=reference / "efficientdet-d0.pth")
    yield model_dir
    make_writable(model_dir)


def make_writable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)


@pytest.fixture(scope="session")
def minute_of_1080p(tmp_path_factory) -> Path:
    """A 60 s 1080p H.264 clip at 30 frames/s (B-frames, as an encoder's fast preset writes them), made once."""
    from clips import encode, require_ffmpeg

    require_ffmpeg()
    return encode(tmp_path_factory.mktemp("clip") / "minute.mp4", width=1920, height=1080, rate="30", seconds=60,
                  options=("-preset", "veryfast", "-crf", "28"))
