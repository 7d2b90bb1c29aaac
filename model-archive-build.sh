#!/usr/bin/env bash
# Usage: model-archive-build.sh [--coef N] [--weights PATH] [--out DIR] [--untrained]
# Writes DIR/model.tar.gz (default build/model.tar.gz) and prints its path and sha256.
set -euo pipefail
cd "$(dirname "$0")"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" -m deploy.archive "$@"
