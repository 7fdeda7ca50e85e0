# Entry points. `make serve` runs all four services locally; `make test` runs the tests.
PY        ?= .venv/bin/python
DATA      ?= $(or $(DATASETS_DIR),../shared/datasets)/screenshots
MODELS    ?= models
WEIGHTS   ?= models/weights
STAMP     := .venv/.installed

.PHONY: setup system-deps weights weights-synthetic train evaluate serve test test-unit test-integration \
        base-image up down compose-test bench clean

setup: $(STAMP)

$(STAMP): requirements/serve.txt requirements/ml.txt requirements/dev.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --quiet -r requirements/dev.txt
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

base-image:
	bash docker/build-base-image.sh

up: base-image
	docker-compose up -d --build

down:
	docker-compose down --remove-orphans

compose-test: setup base-image
	$(PY) -m tests.compose_check

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf .venv .pytest_cache test-artifacts bench/results
