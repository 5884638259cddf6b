# Data-lifecycle pipeline. `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; install Python 3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install pinned dependencies

tools: ## Install promtool and prometheus, and chromium for the desk's browser test (Debian packages) where missing
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	else echo "warning: promtool/prometheus missing; alert-rule and scrape tests will be skipped (apt-get install prometheus)" >&2; fi
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; \
	else echo "warning: chromium missing; the desk's browser test will be skipped (apt-get install chromium)" >&2; fi

run: install ## Run the pipeline locally: broker, worker, downstream stores and traffic simulator (demo policy)
	$(BIN)/lifecycle demo

worker: install ## Run only the worker against KAFKA_BOOTSTRAP_SERVERS (or a local broker)
	$(BIN)/lifecycle worker

test: install tools ## Run the whole test suite (starts a local Kafka broker unless KAFKA_BOOTSTRAP_SERVERS is set)
	$(BIN)/pytest tests --durations=20

test-unit: install tools ## Run the unit tests (no processes started)
	$(BIN)/pytest tests/unit

test-integration: install ## Run the integration tests against a real broker
	$(BIN)/pytest tests/integration

lint: install ## ruff format --check, ruff check, mypy --strict on our packages
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

compat: install ## Check every Avro schema is FULL_TRANSITIVE compatible with its history
	$(BIN)/lifecycle schemas check-compat

chaos: install ## Fault-injection suite: own 3-node cluster, workers/broker/downstream killed, scaling, consistency checks (~5 min; CHAOS_* env, see docs/chaos.md)
	$(BIN)/python -m tests.chaos run

bench: install ## Run the benchmarks (codec, CPU per event by records held, worker throughput, Faust's own floor, one subject's growth and erasure, tick cost, desk)
	$(BIN)/python bench/codec_bench.py
	$(BIN)/python bench/subject_cpu_bench.py
	$(BIN)/python bench/worker_throughput.py
	$(BIN)/python bench/faust_floor.py
	$(BIN)/python bench/large_subject_bench.py --records 10000
	$(BIN)/python bench/tick_bench.py
	$(BIN)/python bench/cutoff_bench.py
	$(BIN)/python bench/desk_bench.py
	$(BIN)/python bench/replay_bench.py

bench-scale: install ## One subject with 10^5 records grown and erased on the real worker; recovery at 10^6 scheduled items (tens of minutes)
	$(BIN)/python bench/large_subject_bench.py --records 100000
	$(BIN)/python bench/recovery_bench.py --items 1000000

bench-failover: install ## Restore rate from changelogs and failover time with/without standby replicas (minutes)
	$(BIN)/python bench/failover_bench.py

clean: ## Stop local brokers and remove the venv, caches and local data (var/)
	-test -x $(BIN)/lifecycle && $(BIN)/lifecycle kafka down --all
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info


.PHONY: help install tools run worker test test-unit test-integration lint compat chaos bench bench-scale bench-failover clean kafka-up kafka-down

KAFKA_NAME ?= dev
KAFKA_NODES ?= 1

kafka-up: install ## Start a local Kafka in the background (KAFKA_NODES=1|3, KAFKA_NAME=dev); prints KAFKA_BOOTSTRAP_SERVERS=...
	$(BIN)/lifecycle kafka up --nodes $(KAFKA_NODES) --name $(KAFKA_NAME)

kafka-down: ## Stop the local Kafka started by kafka-up (KAFKA_NAME=dev); its logs stay in var/kafka/
	$(BIN)/lifecycle kafka down --name $(KAFKA_NAME)
