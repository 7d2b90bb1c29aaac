"""`make demo`: offline, end to end, exit code 0 and a picture with the boxes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO
from PIL import Image

pytestmark = pytest.mark.dev


@pytest.mark.parametrize("server", ["torchserve", "ray"])
def test_demo_runs_offline_and_draws_a_picture(server):
    pytest.importorskip("ray" if server == "ray" else "sagemaker_pytorch_serving_container")
    result = subprocess.run([sys.executable, "-m", "localrun.demo", "--server", server], cwd=REPO, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo OK" in result.stdout
    assert result.stdout.count("HTTP 200") == 4 and result.stdout.count("HTTP 400") == 2
    assert '"codec": "h264"' in result.stdout and '"frame": 30' in result.stdout  # the clip, a frame a second
    with Image.open(REPO / "build" / "demo" / "detections.png") as picture:
        assert picture.size == (600, 400)
