"""Building model.tar.gz as SageMaker expects it: the checkpoint at its root, code/ beside it.

The archive is reproducible: sorted entries, fixed modification times, owners and modes, and a
gzip header without a time stamp, so the same inputs give a byte-identical file.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import tarfile
import tempfile
from pathlib import Path

from deploy.model_dir import REPO, assemble_model_dir, local_checkpoint

EPOCH = 0


def _add(tar: tarfile.TarFile, path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = path.stat().st_size, 0o644
        with open(path, "rb") as data:
            tar.addfile(info, data)


def write_reproducible_tar_gz(source: Path, archive: Path) -> None:
    """Every file and folder under source, relative to it, in sorted order, normalised metadata."""
    paths = sorted(source.rglob("*"), key=lambda p: p.relative_to(source).as_posix())
    archive.parent.mkdir(parents=True, exist_ok=True)
    with open(archive, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=EPOCH) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in paths:
            _add(tar, path, path.relative_to(source).as_posix())


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def build_archive(coef: int, weights: Path | None, out_dir: Path, untrained: bool = False) -> Path:
    """out_dir/model.tar.gz with efficientdet-d{coef}.pth and code/ (inference.py and our packages)."""
    if weights is None and not untrained:
        raise FileNotFoundError("no checkpoint: pass --weights PATH, run `make weights COEF=N`, or --untrained")
    with tempfile.TemporaryDirectory(prefix="model-archive-") as staging:
        model_dir = assemble_model_dir(Path(staging) / "model", coef=coef, weights=weights, read_only=False)
        archive = out_dir / "model.tar.gz"
        write_reproducible_tar_gz(model_dir, archive)
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model-archive-build.sh",
                                     description="Build model.tar.gz for the AWS PyTorch inference container.")
    parser.add_argument("--coef", type=int, choices=range(9), default=0, help="compound coefficient (default 0)")
    parser.add_argument("--weights", type=Path, help="checkpoint (default: weights/efficientdet-d{N}.pth)")
    parser.add_argument("--out", type=Path, default=REPO / "build", help="output folder (default build/)")
    parser.add_argument("--untrained", action="store_true",
                        help="no checkpoint: package generated UNTRAINED weights (offline tests and demos only)")
    args = parser.parse_args(argv)
    weights = args.weights
    if weights is None and not args.untrained:
        default = local_checkpoint(args.coef)
        weights = default if default.is_file() else None
    if weights is not None and not weights.is_file():
        parser.error(f"--weights {weights}: no such file")
    try:
        archive = build_archive(args.coef, weights, args.out, args.untrained)
    except FileNotFoundError as error:
        parser.error(str(error))
    print(archive)
    print(f"sha256 {sha256(archive)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
