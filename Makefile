# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make demo` needs the package and TensorFlow only; `make test` installs the rest.
DEMO_STAMP := $(VENV)/.installed-demo
# PyTorch's CPU build, pinned by its local version so that pip never falls
# back to the default Linux wheel (several GB of CUDA). The machines this
# project runs on serve it from their wheel folder; elsewhere, add PyTorch's
# CPU index: make test TORCH_INDEX="--extra-index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0+cpu
TORCH_INDEX ?=
BACKENDS ?= tensorflow jax torch
export KERAS_BACKEND ?= tensorflow
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: demo test install lint bench docs dist clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml Makefile
	$(PY) -m pip install --quiet -e ".[test,examples,docs,tensorflow,jax]" "$(TORCH)" $(TORCH_INDEX)
	touch $(STAMP)

$(DEMO_STAMP): $(PY) pyproject.toml Makefile
	$(PY) -m pip install --quiet -e ".[tensorflow]"
	touch $(DEMO_STAMP)

install: $(STAMP)

# IndRNN and LSTM on the adding problem, both with GradientBoard, in runs/demo;
# ends with the TensorBoard command and what to look at.
demo: $(DEMO_STAMP)
	@$(PY) examples/demo.py --logdir runs/demo

# The suite once per backend (every backend runs even if one fails); tests
# about TensorFlow itself run only on it. pytest workers steal queued tests
# from each other so none idles at the end: one per core, and on TensorFlow
# one more, since its suite waits on the processes it starts (serving,
# `saved_model_cli`, a cluster of workers): 3 workers took 327 s where 2
# took 370-383 s on 2 cores; on JAX (compile-bound) and PyTorch a third
# worker gained nothing.
PYTEST_ARGS ?= --dist worksteal --durations=15
WORKERS ?= 2
TENSORFLOW_WORKERS ?= 3
test: $(STAMP)
	@failed=""; \
	echo "=== make lint"; \
	$(MAKE) --no-print-directory lint || failed="$$failed lint"; \
	for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b"; \
		workers=$(WORKERS); [ "$$b" = tensorflow ] && workers=$(TENSORFLOW_WORKERS); \
		KERAS_BACKEND=$$b $(PY) -m pytest -q -n $$workers $(PYTEST_ARGS) tests || failed="$$failed $$b"; \
	done; \
	echo "=== make docs"; \
	$(MAKE) --no-print-directory docs || failed="$$failed docs"; \
	echo "=== make dist"; \
	$(MAKE) --no-print-directory dist || failed="$$failed dist"; \
	if [ -n "$$failed" ]; then echo "FAILED on:$$failed"; exit 1; fi

# ruff (configured in pyproject.toml): lint, and the formatting the tree keeps.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# A wheel and an sdist that `twine check` accepts; the wheel holds only the package.
dist: $(STAMP)
	@rm -rf dist
	@$(PY) -m build --outdir dist . > build.log 2>&1 || (tail -30 build.log; exit 1)
	@$(PY) -m twine check --strict dist/*
	@$(PY) -c "import glob, zipfile; names = zipfile.ZipFile(glob.glob('dist/*.whl')[0]).namelist(); \
	other = [n for n in names if not n.startswith(('keras_gradkit/', 'keras_gradkit-'))]; \
	assert not other, f'the wheel holds more than the package: {other}'; print(f'wheel: {len(names)} files, only keras_gradkit')"

# The documentation site (mkdocs.yml): --strict makes a broken link, a missing
# API reference or a docstring griffe cannot parse an error.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) benchmarks/rnn_speed.py

clean:
	rm -rf $(VENV) runs build dist build.log site *.egg-info
