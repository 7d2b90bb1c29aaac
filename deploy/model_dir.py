"""Assembling a model dir exactly as SageMaker unpacks model.tar.gz: checkpoint at the root, code in code/."""

from __future__ import annotations

import json
import logging
import shutil
import stat
import tarfile
from pathlib import Path

from deploy.vendor import code_lib
from efficientdet.untrained import write_untrained_checkpoint

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CODE_FILES = ("inference.py", "ray_app.py")  # the TorchServe toolkit's entry point, the Ray Serve app
RAY_CONFIG = REPO / "deploy" / "ray_config.yaml"  # config.yaml at the model dir's root, for the Ray Serve DLC
CODE_PACKAGES = ("efficientdet", "request_handling")
CODE_LIB_NAME = "lib"  # code/lib: the wheels the archive carries (deploy/vendor.py)


def local_checkpoint(coef: int) -> Path:
    """weights/efficientdet-d{coef}.pth in the clone, where `make weights` puts a published checkpoint."""
    return REPO / "weights" / f"efficientdet-d{coef}.pth"


def copy_code(code_dir: Path) -> None:
    """inference.py and our packages (no caches) into code_dir, and the wheels the archive carries unpacked into
    code_dir/lib; no requirements.txt: the AWS images' toolkits pip-install one at every container start, which
    fails in network isolation."""
    code_dir.mkdir(parents=True, exist_ok=True)
    for name in CODE_FILES:
        shutil.copy2(REPO / name, code_dir / name)
    for package in CODE_PACKAGES:
        shutil.copytree(REPO / package, code_dir / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(code_lib(), code_dir / CODE_LIB_NAME, ignore=shutil.ignore_patterns(".wheels"), symlinks=True)


def assemble_model_dir(target: str | Path, coef: int = 0, weights: str | Path | None = None,
                       read_only: bool = True) -> Path:
    """A model dir with the checkpoint (given, or UNTRAINED generated weights) and code/."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=False)
    checkpoint = target / f"efficientdet-d{coef}.pth"
    if weights:
        shutil.copy2(weights, checkpoint)
    else:
        write_untrained_checkpoint(coef, checkpoint)
        (target / "efficientdet.json").write_text(json.dumps({"compound_coef": coef, "untrained": True}) + "\n")
    copy_code(target / "code")
    shutil.copy2(RAY_CONFIG, target / "config.yaml")
    if read_only:
        make_read_only(target)
    return target


def make_read_only(path: Path) -> None:
    for p in sorted([path, *path.rglob("*")], reverse=True):
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def extract_archive(archive: Path, target: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def prepare_model_dir(base_dir: Path, model: str | None, coef: int, weights: str | None) -> Path:
    """base_dir/model as a server finds it: a link to MODEL, an extracted archive, or a fresh assembly."""
    model_path = base_dir / "model"
    if model:
        source = Path(model).resolve()
        if not source.exists():
            raise SystemExit(f"MODEL={model}: no such file or directory")
        if source.is_dir():
            model_path.symlink_to(source, target_is_directory=True)
        else:
            extract_archive(source, model_path)
        return model_path
    default = local_checkpoint(coef)
    checkpoint = weights or (default if default.is_file() else None)
    if checkpoint is None:
        log.warning("no checkpoint at %s: generating deterministic UNTRAINED weights; detections will be "
                    "MEANINGLESS (run `make weights COEF=%d` where the network allows)", default, coef)
    return assemble_model_dir(model_path, coef=coef, weights=checkpoint)
