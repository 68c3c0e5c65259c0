# Two commands: `make demo` and `make test`. Both create .venv when it is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export LROUTER_HOME ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install demo test lint validate dev bench clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m pipelines.demo

test: install
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .

validate: install
	$(VENV)/bin/dagster definitions validate -m pipelines.definitions

dev: install
	$(VENV)/bin/dagster dev -m pipelines.definitions

# bench/router.py times the router as a service runs it: OpenMP's default wait policy, not PASSIVE
bench: install
	for f in bench/*.py; do \
	  if [ $$f = bench/router.py ]; then env -u OMP_WAIT_POLICY $(PY) $$f || exit 1; else $(PY) $$f || exit 1; fi; \
	done

clean:
	rm -rf data/
