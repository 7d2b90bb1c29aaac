#!/usr/bin/env bash
# On a GPU machine: the CUDA tests, then `python -m bench.gpu`, each log and the JSON under $OUT (default
# build/gpu-check). It needs Python 3.12 with torch, torchvision, numpy, Pillow, OpenCV and pytest, and what
# `make gpu-carry` puts in build/gpu-carry/ (for a machine with no package index, copy the tree with that folder).
# The clip part (bench.gpu's (e) and the device clip test) needs PyAV: `make gpu-av` puts the archive's wheel in
# build/gpu-av/, unpacked here when present; without it they are skipped.
# One command there: `bash bench/gpu-check.sh`. Arguments go to bench.gpu (e.g. `--coefs 0` for a shorter run,
# `--parts video` for the clip alone); PYTEST_ARGS replaces the tests' selection (default: the device tests' file).
# Exit status: 0 when the tests and the benchmark both passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu-check}
CARRY=$PWD/build/gpu-carry
mkdir -p "$OUT" /tmp/gpu-check/bin
export PYTHONPATH=$CARRY/site PYTHONUNBUFFERED=1 EFFICIENTDET_REFERENCE=$CARRY/reference PATH=/tmp/gpu-check/bin:$PATH
for wheel in build/gpu-av/*.whl; do
    [ -f "$wheel" ] || continue
    python3 -m deploy.vendor "$wheel" /tmp/gpu-check/lib && export PYTHONPATH=/tmp/gpu-check/lib:$PYTHONPATH
done
python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$CARRY/weed.xz" /tmp/gpu-check/bin/weed && chmod +x /tmp/gpu-check/bin/weed
{
    nvidia-smi || true
    python3 -c 'import cv2, torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__,
"OpenCV", cv2.__version__, "CUDA", torch.cuda.is_available() and torch.cuda.get_device_name())'
} 2>&1 | tee "$OUT/machine.txt"

status=0
read -ra selection <<<"${PYTEST_ARGS:-tests/test_device_pipeline.py}"
timeout 240 python3 -m pytest -q -p no:cacheprovider "${selection[@]}" 2>&1 | tee "$OUT/tests.log" || status=1
timeout 330 python3 -m bench.gpu --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/bench.log" || status=1
exit $status
