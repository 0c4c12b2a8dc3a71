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

.PHONY: venv regenerate check-generated test lint bench triton-report gpu-check demo test-install mutants mutmut clean

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

lint: venv
	$(PY) -m ruff check derive deu tests
	$(PY) -m black --check derive deu tests
	$(PY) -m mypy

bench: venv
	$(PY) -m deu.benchmark

# No GPU needed: every Triton kernel variant compiled ahead of time for sm_90
# (ARGS="--arch 80", or ARGS="--hip gfx942"), with ptxas's register and spill counts.
triton-report: venv
	$(PY) -m deu._triton_aot $(ARGS)

# Only on a machine with a GPU, in one command (BENCHMARKS.md): the Triton
# numerics against the PyTorch path on the device, then the GPU bench cases,
# printed as Markdown (ARGS="--markdown FILE" also writes it, after every step).
# No venv: $(PYTHON) must already have a CUDA or ROCm torch and triton; this
# checkout is installed into it editable, without dependencies or downloads.
gpu-check:
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation --no-index -e .
	PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1 $(PYTHON) -m deu.gpu_check $(ARGS)

# On demand, not in CI (about 20 minutes on one core): plausible bugs applied one
# at a time to a scratch copy, each of which the named fast tests must catch.
mutants: venv
	OMP_NUM_THREADS=1 $(PY) tests/mutants.py

# On demand, not in CI (hours on two cores): mutmut's own mutants of
# the runtime's rule files (deu/_subspaces.py, _plan.py, _neighbour.py, _values.py,
# _autograd.py) against the fast tests ([tool.mutmut] in
# pyproject.toml), then tests/mutmut_report.py: every survivor must be listed there
# as equivalent, with the reason. Results are kept in mutants/ and reused; a run
# can be stopped and resumed, or limited to named mutants (ARGS="NAME ...").
MUTMUT := mutmut==3.8.1
mutmut: venv
	$(PY) -m pip install --quiet "$(MUTMUT)"
	DEU_PRELOAD_CPU_KERNEL=1 OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2 $(ARGS)
	$(PY) tests/mutmut_report.py --markdown build/mutmut.md

# Seconds: 2 DEUs learn the nested circles; prints their equations, writes the
# decision boundary and the subspace gallery under build/demo.
demo: venv
	$(PY) -m deu.experiments.demo --out build/demo

# The full packaging check: a fresh venv outside the checkout, torch and the
# wheel installed from scratch, then a forward and backward pass from elsewhere.
test-install: venv
	rm -rf /tmp/deu-test-install && mkdir -p /tmp/deu-test-install
	$(PY) -m pip wheel --no-deps -q -w /tmp/deu-test-install/wheels .
	$(PYTHON) -m venv /tmp/deu-test-install/venv
	/tmp/deu-test-install/venv/bin/pip install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	/tmp/deu-test-install/venv/bin/pip install -q /tmp/deu-test-install/wheels/deu-*.whl
	cd /tmp/deu-test-install && venv/bin/python -c "import torch, deu; m = deu.DEU(4); x = torch.randn(2, 4, requires_grad=True); m(x).sum().backward(); print('installed deu works:', deu.__file__)"

clean:
	rm -rf $(VENV) build *.egg-info
