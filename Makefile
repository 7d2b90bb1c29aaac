# One-command setup: every target creates .venv (and installs Java 17) when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
COEF ?= 0
PORT ?= 8080

# Each test module names its tiers by marker (tests/conftest.py); a tier is a marker expression.
# The production tier: the unit tests and the handler, model and archive tests on the AWS PyTorch inference DLC 2.6's
# versions (Python 3.12, torch 2.6; requirements/dlc-2.6.txt) in a venv of their own.
PYTHON_PRODUCTION ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12.*/bin/python3) \
	$(shell command -v python3.12))
PROD_VENV := .venv-dlc26
PROD_STAMP := $(PROD_VENV)/.installed
# The Ray tier: the unit tier and the HTTP contract suite against Ray Serve, on the Ray Serve DLC's versions
# (Python 3.13, Ray 2.57, torch 2.10; requirements/ray-dlc.txt) in a venv of their own.
PYTHON_RAY ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.13.*/bin/python3) \
	$(shell command -v python3.13))
RAY_VENV := .venv-ray
RAY_STAMP := $(RAY_VENV)/.installed
SERVER ?= torchserve
SERVE_MODULE := $(if $(filter ray,$(SERVER)),localrun.ray_serve,localrun.serve)

.PHONY: venv java ffmpeg test test-dev test-production test-ray test-unit lint serve weights demo bench load gpu-carry gpu-av clean

$(STAMP): requirements/dev.txt requirements/serve.txt requirements/deploy.txt requirements/archive.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools<81'
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $(STAMP)

venv: $(STAMP)

$(PROD_STAMP): requirements/dlc-2.6.txt requirements/production-tests.txt requirements/archive.txt
	@test -n "$(PYTHON_PRODUCTION)" || { echo "Python 3.12 not found: pyenv install 3.12, or set PYTHON_PRODUCTION"; exit 1; }
	test -x $(PROD_VENV)/bin/python || $(PYTHON_PRODUCTION) -m venv $(PROD_VENV)
	$(PROD_VENV)/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12), "the DLC 2.6 runs Python 3.12"'
	$(PROD_VENV)/bin/python -m pip install -q -r requirements/production-tests.txt
	touch $(PROD_STAMP)

$(RAY_STAMP): requirements/ray-dlc.txt requirements/ray-tests.txt requirements/archive.txt
	@test -n "$(PYTHON_RAY)" || { echo "Python 3.13 not found: pyenv install 3.13, or set PYTHON_RAY"; exit 1; }
	test -x $(RAY_VENV)/bin/python || $(PYTHON_RAY) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 13), "the Ray Serve DLC runs Python 3.13"'
	$(RAY_VENV)/bin/python -m pip install -q -r requirements/ray-tests.txt
	touch $(RAY_STAMP)

java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "java not found: installing openjdk-17-jre-headless"; \
	  SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless; }

# the tests' video clips are made with FFmpeg's command-line tools (the servers decode with PyAV's own FFmpeg)
ffmpeg:
	@command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || { \
	  echo "ffmpeg not found: installing Debian's ffmpeg"; \
	  SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg; }

lint: venv
	$(PY) -m ruff check .
	$(VENV)/bin/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu

test: lint test-dev test-production test-ray

test-dev: venv java ffmpeg
	$(PY) -m pytest

test-production: $(PROD_STAMP) ffmpeg
	$(PROD_VENV)/bin/python -m pytest -p no:cacheprovider -m "unit or production"

test-ray: $(RAY_STAMP) ffmpeg
	$(RAY_VENV)/bin/python -m pytest -p no:cacheprovider -m "unit or ray" -k "not torchserve"

test-unit: venv
	$(PY) -m pytest -m unit

serve: venv java
	$(PY) -m $(SERVE_MODULE) --coef $(COEF) --port $(PORT) $(if $(MODEL),--model $(MODEL))

weights: venv
	$(PY) -m efficientdet.download --coef $(COEF) --dir weights

demo: venv java
	$(PY) -m localrun.demo --server $(SERVER)

bench: venv java ffmpeg
	$(PY) -m bench --coef $(COEF)

load: venv java
	$(PY) -m bench.load

# what a GPU machine without a package index lacks for bench/gpu-check.sh, from the production venv (Python 3.12)
gpu-carry: $(PROD_STAMP)
	PROD_VENV=$(PROD_VENV) bash bench/gpu-carry.sh

# the archive's PyAV wheel (36 MB), for bench/gpu-check.sh's clip part
gpu-av: venv
	rm -rf build/gpu-av && mkdir -p build/gpu-av
	$(PY) -c 'import shutil; from deploy.vendor import pinned, wheel_for; \
	[shutil.copy(wheel_for(r), "build/gpu-av") for r in pinned() if r.startswith("av==")]'

clean:
	rm -rf build .pytest_cache .ruff_cache .sagemaker $(PROD_VENV) $(RAY_VENV)
