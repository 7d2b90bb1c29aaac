"""Shared fixtures (the reference data beside the clone, S3 on loopback, model dirs) and the test tiers.

Each test module names its tiers with `pytestmark` (`unit`, `production`, `ray`, `dev`; `cuda` marks a test that
needs a GPU). `make test` runs each tier in its own venv by marker (`pytest -m "unit or production"`); a module
outside the selected tiers is not even imported, so it may import what only the dev venv has. A module that names
no tier is an error, so a new test file never silently misses a tier.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import REFERENCE, SAMPLE_IMAGE, USER_BUCKET, USER_KEY
from PIL import Image

TIERS = {"unit", "production", "ray", "dev"}
# Tests talk to loopback only: botocore must not ask the EC2 instance metadata service for credentials when a
# test's environment has none (servers started by tests inherit this).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def module_tiers(path: Path) -> set[str]:
    """The tiers a test module's `pytestmark` names, read from its source (the module is not imported)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            return {n.attr for n in ast.walk(node.value) if isinstance(n, ast.Attribute)} & TIERS
    return set()


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """Test modules outside the `-m` expression's tiers are not collected (nor imported)."""
    if not (collection_path.name.startswith("test_") and collection_path.suffix == ".py"):
        return None
    tiers = module_tiers(collection_path)
    if not tiers:
        raise pytest.UsageError(f"{collection_path.name} names no tier: add pytestmark = [pytest.mark.<tier>] "
                                f"with one of {sorted(TIERS)} (tests/conftest.py)")
    expression = config.getoption("markexpr")
    if not expression:
        return None
    from _pytest.mark.expression import Expression

    matches = Expression.compile(expression).evaluate(lambda name, **_: name in tiers)
    return None if matches else True


def pytest_runtest_setup(item) -> None:
    if item.get_closest_marker("cuda") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("CUDA-only: no GPU on this machine")


@pytest.fixture(scope="session")
def reference() -> Path:
    """../shared/fixtures/reference, or a skip when this clone has none beside it."""
    if not (REFERENCE / "efficientdet-d0.pth").is_file():
        pytest.skip(f"reference fixtures not found at {REFERENCE} (a user's clone has no ../shared)")
    return REFERENCE


@pytest.fixture(scope="session")
def coffee(reference: Path) -> np.ndarray:
    return np.asarray(Image.open(reference / "coffee.png").convert("RGB"))




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
