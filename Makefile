# synthseg-tf: two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# Which python3.10 builds the venv: override with `make PYTHON310=/path/to/python3.10 setup`.
PYTHON310 ?=
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: setup demo test bench bench-quick clean-venv lock pipeline-demo

setup: $(VENV)/.installed

# --compile-bytecode: imports read .pyc files even where PYTHONDONTWRITEBYTECODE is set (importing
# TensorFlow took 8.5 s from source here, 3.5 s compiled; every CLI call, test subprocess and Beam
# worker pays it).
$(VENV)/.installed: requirements.lock setup.py Makefile
	@py="$(PYTHON310)"; \
	if [ -z "$$py" ] && python3.10 -c '' 2>/dev/null; then py=python3.10; fi; \
	if [ -z "$$py" ]; then py=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10*/bin/python3.10 2>/dev/null | tail -n 1); fi; \
	if [ -z "$$py" ] || ! "$$py" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then \
	  echo "error: python3.10 is required (TFX 1.15 needs Python <3.11). Install it (e.g. 'pyenv install 3.10') or run 'make PYTHON310=/path/to/python3.10 setup'." >&2; exit 2; fi; \
	if [ ! -x "$(PY)" ]; then echo "creating $(VENV) with $$py"; "$$py" -m venv "$(VENV)"; fi
	$(PY) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip sync -q --compile-bytecode --python $(PY) requirements.lock
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $@

# Re-resolve the lock from requirements.in (needs the registry; about a minute).
lock: $(VENV)/.installed
	$(VENV)/bin/uv pip compile -q --python-version 3.10 --python-platform x86_64-unknown-linux-gnu requirements.in -o requirements.lock

demo: setup
	$(VENV)/bin/synthseg demo --out $(DEMO_OUT)

# The TFX pipeline (LocalDagRunner, ML Metadata in SQLite) on the demo scenes with tiny sizes/steps.
pipeline-demo: setup
	$(VENV)/bin/synthseg pipeline run --data demo-scenes --out runs/pipeline-demo --preset demo

test: setup
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS) tests

# Benchmarks of issue 8 -> bench-results.json (+ a table); bench-quick: the same keys in under 5 minutes.
bench: setup
	$(PY) benchmarks/run_all.py

bench-quick: setup
	$(PY) benchmarks/run_all.py --quick

clean-venv:
	rm -rf $(VENV)
