# One-command setup: every target creates .venv (and installs Java 17) when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
COEF ?= 0
PORT ?= 8080

.PHONY: venv java test lint serve weights demo bench load clean

$(STAMP): requirements/dev.txt requirements/serve.txt requirements/deploy.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools<81'
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $(STAMP)

venv: $(STAMP)

java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "java not found: installing openjdk-17-jre-headless"; \
	  SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless; }

lint: venv
	$(PY) -m ruff check .
	$(VENV)/bin/hadolint docker/Dockerfile.cpu docker/Dockerfile.gpu

test: venv java lint
	$(PY) -m pytest

serve: venv java
	$(PY) -m localrun.serve --coef $(COEF) --port $(PORT) $(if $(MODEL),--model $(MODEL))

weights: venv
	$(PY) -m efficientdet.download --coef $(COEF) --dir weights

demo: venv java
	$(PY) -m localrun.demo

bench: venv java
	$(PY) -m bench --coef $(COEF)

load: venv java
	$(PY) -m bench.load

clean:
	rm -rf build .pytest_cache .ruff_cache .sagemaker
