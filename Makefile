# One entry point for set-up, tests, the demo and benchmarks.
# `make test` and `make demo` run `make setup` first; set-up is cached and
# idempotent (a warm run takes seconds), see scripts/setup.sh.
SHELL := /bin/bash
VENV ?= .venv
AIRFLOW_VENV ?= .venv-airflow
PY := $(VENV)/bin/python
AIRFLOW_PY := $(AIRFLOW_VENV)/bin/python
PYTEST_ARGS ?=
# The main suite on 2 pytest-xdist workers; a test folder runs whole on one worker (tests/conftest.py:
# pytest_xdist_make_scheduler), so its shared fixtures (the local cluster, the trained models) are
# built once. Folders go out in collection order (no reordering by test count), which
# tests/conftest.py sets: the longest first. XDIST= runs the suite in one process.
XDIST ?= -n 2 --dist loadscope --no-loadscope-reorder
export PLE_VENV := $(abspath $(VENV))
export PLE_AIRFLOW_VENV := $(abspath $(AIRFLOW_VENV))

.PHONY: help setup test test-main test-airflow demo doctor bench bench-deps bench-model bench-etl bench-training clean

help:
	@echo "make setup    create .venv (+ horovod, petastorm, Delta jars) and .venv-airflow"
	@echo "make test     set up if needed, then run every test (main and Airflow suites side by side)"
	@echo "make demo     set up if needed, then run the whole pipeline locally (ple pipeline)"
	@echo "make doctor   check every component of the stack"
	@echo "make bench    run the benchmarks (minutes; prints figures)"

setup:
	@bash scripts/setup.sh all

# The two suites run side by side (the Airflow one mostly waits on its scheduler and jobs); each
# suite's output is printed whole when it ends (--output-sync), so the two do not interleave.
test: setup
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-main test-airflow

test-main:
	$(PY) -m pytest tests --ignore=tests/airflow $(XDIST) $(PYTEST_ARGS)

test-airflow:
	$(AIRFLOW_PY) -m pytest tests/airflow $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/ple pipeline $(DEMO_ARGS)

doctor: setup
	$(VENV)/bin/ple doctor

bench: setup bench-model bench-etl bench-training

# torch-rechub is the peer PLE the throughput benchmark compares against; it pins
# old versions of half the stack, so it goes in with --no-deps (its imports work).
bench-deps: setup
	@$(PY) -c "import torch_rechub" 2>/dev/null || $(VENV)/bin/pip install -q --no-deps torch-rechub==0.9.0

bench-model: bench-deps
	$(PY) bench/model_throughput.py
	$(PY) bench/synthetic_correlation.py

# duckdb is the ETL benchmark's lower bound (pyproject's optional group `bench`)
bench-etl: setup
	@$(PY) -c "import duckdb" 2>/dev/null || $(VENV)/bin/pip install -q "duckdb==2.0.0"
	$(PY) bench/etl_throughput.py

bench-training:
	$(PY) bench/training_throughput.py

clean:
	rm -rf ple_data spark-warehouse .pytest_cache
