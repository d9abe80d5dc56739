# Warroom — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BROKER := $(PY) deploy/kafka/broker.py
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv kafka run test test-unit chaos lint bench bench-chat clean bench-state compliance-eval bench-email

help: ## show this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install Warroom with pinned dependencies

kafka: $(STAMP) ## download the Apache Kafka broker jars from Maven Central (cached)
	$(BROKER) fetch

run: venv kafka ## start a local broker, the worker and the chat endpoint; feed the demo (Ctrl-C stops all)
	deploy/run-local.sh

test: venv kafka validate-deploy ## unit, streams, integration and reduced chaos tests against a fresh local broker
	$(BROKER) run -- deploy/run-tests.sh $(PYTEST_ARGS)

test-unit: venv ## run only the tests that need no broker
	$(PY) -m pytest tests/unit tests/streams $(PYTEST_ARGS)

chaos: venv kafka ## full chaos suite: worker kills, broker restart, scaling, malformed input, hostile bundles
	WARROOM_CHAOS_SCALE=full $(BROKER) run -- $(PY) -m pytest tests/chaos tests/integration -m "long or chaos" -q $(PYTEST_ARGS)

lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy engine streams schemas connectors

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): bench/constraints-quix.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -c bench/constraints-quix.txt 'quixstreams[avro]'
	touch $(BENCH_STAMP)

.PHONY: bench-venv
bench-venv: $(BENCH_STAMP) ## Quix Streams for make bench, in .venv-bench (its pins clash with .venv's)

bench: venv kafka bench-venv ## ceiling, naive Faust, Quix Streams, Warroom full pipeline; latency; state bytes (BENCH_ARGS=--quick)
	$(BROKER) run -- $(PY) bench/throughput.py $(BENCH_ARGS)

bench-chat: venv kafka ## chat intake: 50 HTTP clients for 60 s, no 5xx, every accepted event once
	$(BROKER) run -- $(PY) bench/chat_load.py $(BENCH_ARGS)

bench-state: venv kafka ## state bytes per customer and restart recovery, memory vs RocksDB store (100k, 1M customers)
	$(BROKER) run -- $(PY) bench/state_store.py $(BENCH_ARGS)

compliance-eval: venv ## precision and recall of the compliance gate on the labelled set (tests/data/compliance)
	$(PY) bench/compliance_eval.py --labelled tests/data/compliance/labelled.jsonl $(BENCH_ARGS)

bench-email: venv ## email connector: mbox split, parse + convert, Avro encode in messages/s (no broker)
	$(PY) bench/connector_email.py $(BENCH_ARGS)

clean: ## remove the venv and caches (keeps downloaded broker jars)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

.PHONY: bench-scoring
bench-scoring: venv ## churn score on real data (modeldata/wa_churn, offline): AUC, log loss, events/s
	$(PY) bench/scoring_quality.py $(BENCH_ARGS)

.PHONY: bench-scoring-overhead
bench-scoring-overhead: venv ## scoring's cost: µs per touchpoint, event-loop gaps while learning, warroom top for 100k customers
	$(PY) bench/scoring_overhead.py $(BENCH_ARGS)

.PHONY: validate-deploy
validate-deploy: venv ## offline checks of deploy/: manifests, compose, alert rules (promtool), YAML lint
	deploy/prometheus/install-promtool.sh
	$(PY) deploy/validate.py
