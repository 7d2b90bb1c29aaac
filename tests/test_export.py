"""python -m efficientdet.export: the exported ONNX and TorchScript networks reproduce our raw outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO

from efficientdet.export import export
from efficientdet.model import EfficientDet
from efficientdet.optimize import fold_all_batch_norms
from efficientdet.untrained import synthetic_images, untrained_state_dict
from efficientdet.weights import build_from_state_dict

pytestmark = pytest.mark.dev

TOLERANCE = 1e-4


def raw_outputs(model, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        regression, logits = model(batch)
    return regression.numpy(), logits.numpy()


def exported_outputs(path, export_format: str, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    if export_format == "torchscript":
        return raw_outputs(torch.jit.load(str(path)), batch)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    regression, logits = session.run(["regression", "class_logits"], {"images": batch.numpy()})
    return regression, logits


@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_the_fixture_checkpoint_exports_and_reproduces_the_reference_raw_outputs(reference, tmp_path, export_format):
    """Exported at the fixture's 128 px input and fed its input tensor (twice: the batch size stays free),
    the exported network gives the reference implementation's raw outputs within 1e-4, as ours does."""
    out = tmp_path / f"d0.{export_format}"
    run = subprocess.run([sys.executable, "-m", "efficientdet.export", "--coef", "0", "--weights",
                          str(reference / "efficientdet-d0.pth"), "--format", export_format, "--input-size", "128",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    raw = np.load(reference / "d0-raw-128.npz")
    batch = torch.from_numpy(np.concatenate([raw["input"], raw["input"]]))
    regression, logits = exported_outputs(out, export_format, batch)
    for image in range(2):
        np.testing.assert_allclose(regression[image], raw["regression"][0], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(1 / (1 + np.exp(-logits[image])), raw["classification"][0], atol=TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def d4() -> EfficientDet:
    """D4 from generated weights, made once: their calibration runs D4 at 1024 px."""
    return build_from_state_dict(untrained_state_dict(4), 4)


@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_a_large_coefficient_exports_at_its_own_size(d4, tmp_path, export_format):
    """D4 (1024 px input, 7 BiFPN cells) from generated weights, fed an image with natural statistics. What
    is exported is our network with its batch norms folded: TorchScript gives its outputs within 1e-4; ONNX
    Runtime's float32 kernels sum in another order, and differ from it no more than our own plain and folded
    networks differ from each other (about 1e-3 on outputs of up to 20, measured)."""
    out = export(d4, 1024, export_format, tmp_path / f"d4.{export_format}")
    torch.manual_seed(1)
    batch = synthetic_images(1024, count=1)
    folded = raw_outputs(fold_all_batch_norms(d4), batch)
    exported = exported_outputs(out, export_format, batch)
    if export_format == "torchscript":
        for ours, theirs in zip(folded, exported):
            np.testing.assert_allclose(theirs, ours, atol=TOLERANCE, rtol=0)
    else:
        for ours, plain, theirs in zip(folded, raw_outputs(d4, batch), exported):
            assert np.abs(theirs - ours).max() <= 2 * np.abs(plain - ours).max()


def run_export(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "efficientdet.export", *arguments], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_a_folder_as_out_gets_the_default_file_name_inside(reference, tmp_path):
    run = run_export("--weights", str(reference / "efficientdet-d0.pth"), "--format", "torchscript",
                     "--input-size", "128", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == str(tmp_path / "efficientdet-d0-128.pt") and (tmp_path / "efficientdet-d0-128.pt").is_file()


@pytest.mark.parametrize("case, expected", [("missing weights", "no such file"), ("wrong coefficient", "efficientdet-d1"),
                                            ("not a checkpoint", "not a loadable"), ("no such folder", "does not exist")])
def test_bad_arguments_exit_2_with_the_usage(reference, tmp_path, case, expected):
    (tmp_path / "text.pth").write_text("not weights")
    weights = {"missing weights": tmp_path / "none.pth", "not a checkpoint": tmp_path / "text.pth"}.get(
        case, reference / "efficientdet-d0.pth")
    arguments = ["--weights", str(weights), "--format", "onnx", "--out", str(tmp_path / "absent" / "d0.onnx")
                 if case == "no such folder" else str(tmp_path / "d0.onnx")]
    run = run_export(*arguments, *(["--coef", "1"] if case == "wrong coefficient" else []))
    assert run.returncode == 2 and run.stderr.startswith("usage:") and expected in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
