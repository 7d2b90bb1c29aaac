#!/usr/bin/env bash
# `make gpu-carry`: build/gpu-carry/, what bench/gpu-check.sh needs on a GPU machine beyond Python 3.12 with torch,
# torchvision, numpy, Pillow, OpenCV, pytest, psutil and scipy, for a machine that has no package index to install it
# from. It copies from the production venv (Python 3.12, the DLC 2.6's versions):
# - site/: boto3 and botocore (its service data for S3 and STS only), the sagemaker-inference toolkits and
#   TorchServe's Python package without its Java frontend (the tests call the toolkit in-process);
# - weed.xz: SeaweedFS's binary, for the one device test that reads its images from S3;
# - reference/: the fixtures the tests and the fidelity check compare with (../shared does not travel).
# Altogether about 55 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PROD_VENV:-.venv-dlc26}
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
REFERENCE=${EFFICIENTDET_REFERENCE:-../shared/fixtures/reference}
CARRY=build/gpu-carry

rm -rf "$CARRY"
mkdir -p "$CARRY/site" "$CARRY/reference"
for package in boto3 botocore s3transfer jmespath retrying sagemaker_inference sagemaker_pytorch_inference \
               sagemaker_pytorch_serving_container ts torchserve; do
    cp -r "$SITE"/"$package"* "$CARRY/site/"
done
rm -rf "$CARRY"/site/ts/frontend/*.jar
find "$CARRY/site/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 ! -name sts -exec rm -rf {} +
find "$CARRY/site" -name __pycache__ -prune -exec rm -rf {} +
xz -T0 -6 -c "$VENV/bin/weed" >"$CARRY/weed.xz"
cp "$REFERENCE"/{README.md,coffee.png,d0-coffee.json,efficientdet-d0.pth} "$CARRY/reference/"
du -sh "$CARRY"
