"""Assembling a model dir exactly as SageMaker unpacks model.tar.gz: checkpoint at the root, code in code/."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

from efficientdet.untrained import write_untrained_checkpoint

REPO = Path(__file__).resolve().parents[1]
CODE_FILES = ("inference.py",)
CODE_PACKAGES = ("efficientdet", "request_handling")


def local_checkpoint(coef: int) -> Path:
    """weights/efficientdet-d{coef}.pth in the clone, where `make weights` puts a published checkpoint."""
    return REPO / "weights" / f"efficientdet-d{coef}.pth"


def copy_code(code_dir: Path) -> None:
    """inference.py and our packages (no caches) into code_dir; no requirements.txt: the AWS images'
    toolkits pip-install one at every container start, which fails in network isolation."""
    code_dir.mkdir(parents=True, exist_ok=True)
    for name in CODE_FILES:
        shutil.copy2(REPO / name, code_dir / name)
    for package in CODE_PACKAGES:
        shutil.copytree(REPO / package, code_dir / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


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
    if read_only:
        make_read_only(target)
    return target


def make_read_only(path: Path) -> None:
    for p in sorted([path, *path.rglob("*")], reverse=True):
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
