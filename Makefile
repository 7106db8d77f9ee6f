# One-command environment, run and test. Every target is idempotent.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The prepared offline MNIST copy that sits beside the checkout (see BUILD.md).
TFDS_DATA_DIR ?= $(abspath ../shared/data/tensorflow_datasets)
export TFDS_DATA_DIR
# Keep TF's C++ INFO chatter out of logs; warnings and errors still show.
export TF_CPP_MIN_LOG_LEVEL ?= 1

.PHONY: venv run test test-fast bench clean-venv

venv: $(STAMP)

$(STAMP): requirements.lock setup.cfg setup.py launch/task_shim.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	# pip check would flag TFF's unsatisfiable jaxlib pin (see BUILD.md); an import proves the set works.
	$(PY) -c "import tensorflow, tensorflow_datasets, tensorflow_federated"
	# The LD_PRELOAD shim that keeps every server on its task's own address.
	$(PY) -m launch.shim
	touch $(STAMP)

# The main job: all four approaches (PS async and sync) on MNIST, same model, each trained
# to 99 % test accuracy (time, examples, measured bytes on the wire), then report.md /
# report.json / report.png in runs/compare-<time>/. About 7 minutes on 2 cores.
run: venv
	$(PY) -m experiments.compare

# Throughput at N = 1, 2, 4 against a single-process Keras fit; rewrites BENCHMARKS.md.
bench: venv
	$(PY) -m experiments.bench

# The whole test suite (what .ci/run calls).
test: venv
	$(PY) -m pytest tests

# Pure and in-process tests only (no multi-process launches, no real MNIST).
test-fast: venv
	$(PY) -m pytest tests -m "not multiprocess and not mnist"

clean-venv:
	rm -rf $(VENV)
