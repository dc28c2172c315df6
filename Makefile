# fluxserve — `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch by default; set TORCH_VERSION (and PIP_INDEX_URL / PIP_EXTRA_INDEX_URL)
# to take another build, or TORCH_VERSION= to keep the torch already in the venv.
TORCH_VERSION ?= 2.13.0
EXTRAS ?= server,operator,dev
# pytest-xdist workers for `make test` (a number, or `auto` for one per CPU core); each
# module's tests stay on one worker (tests/support/module_scheduling.py), so its servers
# start once. Two on two cores: three were no faster (900 s against 914 s) and starved the
# memory and timing checks that measure one process.
TEST_WORKERS ?= 2

.PHONY: help install test lint format

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Build .venv with everything (server, operator, dev tools)

# torch and the extras in one pip run: one resolution, where a second run would resolve
# torch's own requirements again.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(TORCH_VERSION),"torch==$(TORCH_VERSION)") -e ".[$(EXTRAS)]"
	touch $@

test: install tools ## Run every test (unit, operator against the API emulator, server with a tiny model, chart)
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=25

lint: install ## ruff, the import layers, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy contract/flux_contract client/flux_client operator/flux_operator server/flux_server trainer/flux_trainer

format: install ## Apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# --- Wire: the gRPC contract and its generated stubs ---
.PHONY: proto

proto: install ## Regenerate the gRPC stubs in contract/flux_contract/_proto from proto/ (a test fails when they are stale)
	$(PY) proto/generate_stubs.py

# --- Operator: the CRD generated from the pydantic models ---
.PHONY: crds

crds: install ## Regenerate crds/, the chart's copy and the example's Kargo project from the operator's spec models (a test fails when they are stale)
	$(PY) -m flux_operator.crdgen crds/
	$(PY) -m flux_operator.crdgen charts/fluxserve-operator/crds/
	$(PY) -m flux_operator render --kargo examples/promotion/env/production/fluxdeployment.yaml \
		> examples/promotion/env/kargo/kargo.yaml

# --- Shipping: pinned tools, container images, end to end on kind ---
.PHONY: tools images e2e
TOOLS_BIN ?= .tools/bin
TAG ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REGISTRY ?= ghcr.io/fluxserve

tools: install ## Fetch pinned helm and kubectl into .tools/bin; jq and prometheus from apt-get (as root)
	PYTHON=$(PY) TOOLS_BIN=$(TOOLS_BIN) hack/install-tools.sh
	hack/install-system-tools.sh

images: ## Build the server and operator images: make images TAG=v1.2.3 [REGISTRY=ghcr.io/you] (needs docker)
	TAG=$(TAG) REGISTRY=$(REGISTRY) hack/build-images.sh

e2e: tools ## On a kind cluster: install the chart, serve the tiny model, roll a bad release back (needs docker, kind)
	TOOLS_BIN=$(TOOLS_BIN) PY=$(PY) tests/e2e/run.sh

# --- Server: the demo and the benchmarks ---
.PHONY: demo bench bench-gpu bench-train soak

demo: install ## Serve a random-weight FLUX, run the article's REST example (demo-output/output.png), then the SDK over gRPC
	@echo "==> install done ($(VENV))"
	$(PY) scripts/demo.py

bench: install ## Server latency overhead (REST, gRPC vs in-process), batching policies, the fleet queue (1 front + 2 workers vs one process), priority at the step (pausing vs joining), the speed options vs eager, the image safety check's cost, cold start with and without the compile cache, live previews' cost (CPU); the operator's bench
	$(PY) bench/server_bench.py
	$(PY) bench/fleet_bench.py
	$(PY) bench/join_bench.py
	$(PY) bench/speed_bench.py
	$(PY) bench/image_safety_bench.py
	$(PY) bench/cold_start_bench.py
	$(PY) bench/preview_bench.py
	if [ -f bench/operator_bench.py ]; then $(PY) bench/operator_bench.py; fi

bench-gpu: install ## The speed options on a FLUX.1-dev-sized model vs the GPU's floor, then cold start with and without the compile cache: make bench-gpu [ARGS="--help" | ARGS="--tiny" on a CPU]
	$(PY) bench/gpu_bench.py $(ARGS)
	$(PY) bench/cold_start_bench.py --gpu

bench-train: install ## LoRA training s/step, peak memory, 1,000-step time at 512/1024 px, bf16 and QLoRA, FLUX.1-dev shapes (GPU; skips on a CPU) [ARGS="--tiny"]
	$(PY) bench/train_bench.py $(ARGS)

soak: install ## Mixed REST/gRPC traffic past the queue, Redis restarted halfway: accepted, refused, lost (0), p95, RSS (SOAK_SECONDS=60)
	$(PY) bench/soak.py --duration $(or $(SOAK_SECONDS),60)
