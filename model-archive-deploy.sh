#!/usr/bin/env bash
# Usage: model-archive-deploy.sh [dev|staging|prod]   (default dev)
# Uploads $ARCHIVE (default build/model.tar.gz) to
# s3://$MODEL_BUCKET/models/efficientdet/videoblocks/<env>/<UTC YYYYmmddTHHMMSS>/model.tar.gz
# (MODEL_BUCKET defaults to videoblocks-ml), verifies it and prints the S3 URI as its last line.
# Uses the default AWS credential chain; AWS_ENDPOINT_URL_S3 selects another S3 endpoint.
set -euo pipefail
cd "$(dirname "$0")"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" -m deploy.upload "$@"
