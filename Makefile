# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo lint docs-check docs docs-serve test test-slow test-core test-all test-interop gpu-report gpu-data gpu-pylib clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,all]'
	touch $(STAMP)

# The main job on the built-in data: train GoogLeNet on the digits, then evaluate the best checkpoint.
DEMO_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(VENV)/bin/inception train --config demo --output-dir $(DEMO_DIR)
	@echo "--- test set, best checkpoint ($(DEMO_DIR)/checkpoints/best.pt):"
	$(VENV)/bin/inception eval --checkpoint $(DEMO_DIR)/checkpoints/best.pt

# ruff: import order, unused names, line length, imports at module top (settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

# The docs site must build with no warning (a broken link or anchor, a page missing from the nav). Not with
# --quiet: mkdocs then drops warnings before --strict counts them (mkdocs issue #4126); the output shows on failure.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

docs-check: $(STAMP)
	@site=$$(mktemp -d) && out=$$($(MKDOCS) build --strict --site-dir $$site 2>&1); rc=$$?; rm -rf $$site; \
		if [ $$rc -ne 0 ]; then echo "$$out"; echo "mkdocs build --strict failed"; exit $$rc; fi

test: lint docs-check
	$(PY) -m pytest -q

# The references (config keys, command line, models) are generated from the code, then the site is built into site/.
docs: $(STAMP)
	$(PY) docs/gen_reference.py
	$(MKDOCS) build --strict

docs-serve: $(STAMP)
	$(MKDOCS) serve

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The core package alone (no extras) in a fresh venv: it trains one epoch on a folder dataset, evaluates and infers,
# and a command of a missing extra names it (.ci/core_check.py). About a minute to install, seconds to run.
VENV_CORE ?= .venv-core

test-core:
	rm -rf $(VENV_CORE)
	$(PYTHON) -m venv $(VENV_CORE)
	$(VENV_CORE)/bin/python -m pip install --quiet -c constraints.txt .
	OMP_NUM_THREADS=1 $(VENV_CORE)/bin/python .ci/core_check.py

test-all: $(STAMP)
	$(PY) -m pytest -q -m 'not gpu'

# Proof against the real frameworks: MindSpore and PaddleClas build each vendor model with random weights,
# save it with their own save functions, and tests/interop checks that `inception` reads the files to the
# same logits. A separate environment (about 9 GB with torch), so the main .venv stays light. PaddleClas
# goes in without its dependencies (opencv, faiss, visualdl, a numpy pin...): the tests import only its
# backbone files, which need paddle and requests. MindSpore and Paddle need numpy < 2.
VENV_INTEROP   ?= .venv-interop
PY_INTEROP     := $(VENV_INTEROP)/bin/python
STAMP_INTEROP  := $(VENV_INTEROP)/.installed

$(STAMP_INTEROP): pyproject.toml constraints.txt
	test -x $(PY_INTEROP) || $(PYTHON) -m venv $(VENV_INTEROP)
	$(PY_INTEROP) -m pip install --quiet --upgrade pip
	$(PY_INTEROP) -m pip install --quiet -c constraints.txt -e . mindspore==2.10.0 paddlepaddle==3.3.1 \
		'numpy<2' requests pytest
	$(PY_INTEROP) -m pip install --quiet --no-deps paddleclas==2.6.0
	touch $(STAMP_INTEROP)

test-interop: $(STAMP_INTEROP)
	INCEPTION_INTEROP=1 $(PY_INTEROP) -m pytest -q tests/interop -p no:cacheprovider

# Every GPU figure the docs promise (docs/performance.md), with its peers, as one Markdown table and JSON, within an 8-minute budget
# on one GPU (without CUDA, a tiny CPU smoke version of the same steps). Reads data/ (see gpu-data); or pass
# ARGS="--data DIR --cifar PATH --budget SECONDS --only STEP...".
gpu-report: $(STAMP) gpu-data
	$(VENV)/bin/inception bench gpu-report --output gpu-report.md --json gpu-report.json --log-dir gpu-report-logs $(ARGS)

# The report's data in the git-ignored data/ folder, so a GPU machine that receives only the checkout has it:
# copied from ../shared/data, which sits beside this repository's checkouts (elsewhere: put them in data/ yourself).
SHARED_ARCHIVES := $(wildcard ../shared/data/cifar10-jpg.tar.gz ../shared/data/imagewoof-sample.tar.gz)
gpu-data:
	mkdir -p data
	$(if $(SHARED_ARCHIVES),cp -n $(SHARED_ARCHIVES) data/,@echo "no ../shared/data here: put cifar10-jpg.tar.gz and imagewoof-sample.tar.gz in data/, or pass --data/--cifar")

# For a GPU machine that has torch but can install nothing: timm (the Inception v4 peer, 11 MB) and the serve extra
# with its dependencies, as wheels for its Python (GPU_PYTHON), at this .venv's versions, unpacked into data/pylib;
# run the report there with PYTHONPATH=src:data/pylib. GPU_PYLIB="timm" or "serve" for one of the two.
GPU_PYTHON ?= 3.12
GPU_PYLIB  ?= timm serve
WHEEL_ARGS := --quiet --only-binary=:all: --python-version $(GPU_PYTHON) --platform manylinux2014_x86_64 \
	--platform manylinux_2_17_x86_64 -c data/wheels.pins -d data/wheels
gpu-pylib: $(STAMP)
	rm -rf data/pylib data/wheels && mkdir -p data/pylib data/wheels
	$(PY) -m pip freeze --exclude-editable > data/wheels.pins
	$(if $(filter timm,$(GPU_PYLIB)),$(PY) -m pip download $(WHEEL_ARGS) --no-deps timm)
	$(if $(filter serve,$(GPU_PYLIB)),$(PY) -m pip download $(WHEEL_ARGS) fastapi uvicorn python-multipart \
		prometheus-client httpx)
	$(PY) -c "import glob, zipfile; [zipfile.ZipFile(w).extractall('data/pylib') for w in glob.glob('data/wheels/*.whl')]"
	rm -rf data/wheels data/wheels.pins
	du -sh data/pylib

clean:
	rm -rf $(VENV) $(VENV_INTEROP) build *.egg-info src/*.egg-info .pytest_cache
