"""Shared fixtures: the reference data beside the clone, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
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
