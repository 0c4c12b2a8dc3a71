# The two set-up commands of the README are `make regenerate` and `make test`;
# each creates .venv when it is missing and installs everything it needs.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The one place torch is pinned for development: the CPU build. On a machine
# whose pip does not already see the CPU wheel, add the CPU index, e.g.
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple"
TORCH := torch==2.13.0+cpu
TORCH_PIP_ARGS ?=

.PHONY: venv regenerate check-generated test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

regenerate: venv
	$(PY) -m derive regenerate

check-generated: venv
	$(PY) -m derive check

test: venv
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
