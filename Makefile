# One-command environment, run and test. Every target is idempotent.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The prepared offline MNIST copy that sits beside the checkout (see BUILD.md), else
# TFDS's own default, where `make data` prepares it.
SHARED_TFDS := $(abspath ../shared/data/tensorflow_datasets)
TFDS_DATA_DIR ?= $(if $(wildcard $(SHARED_TFDS)),$(SHARED_TFDS),$(HOME)/tensorflow_datasets)
export TFDS_DATA_DIR
# Keep TF's C++ INFO chatter out of logs; warnings and errors still show.
export TF_CPP_MIN_LOG_LEVEL ?= 1

.PHONY: venv data run test test-fast bench plan clean-venv peers peers-compare

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

# MNIST prepared in $(TFDS_DATA_DIR), once: nothing if it is there; else TFDS's own download,
# or with IDX=<dir> from the four MNIST IDX files (checked against the official sums).
data: venv
	$(PY) -m experiments.data $(if $(IDX),--idx_dir=$(IDX))

# The main job: all four approaches (PS async and sync, gossip sync and async) on MNIST, same model, each trained
# to 99 % test accuracy (time, examples, measured bytes on the wire), then report.md /
# report.json / report.png in runs/compare-<time>/. About 4 minutes on 2 cores.
run: venv data
	$(PY) -m experiments.compare

# Throughput at N = 1, 2, 4 against a single-process Keras fit; rewrites BENCHMARKS.md.
bench: venv data
	$(PY) -m experiments.bench

# The cost model: the regime grid's capped cells predicted from its uncapped runs, then the
# planning table and heatmaps for N = 8, 64, 512 at 1-100 Gbit/s (runs/plan/). Seconds.
plan: venv
	$(PY) -m experiments.costmodel --validate --predict

# The whole test suite (what .ci/run calls).
test: venv data
	$(PY) -m pytest tests

# Pure and in-process tests only (no multi-process launches, no real MNIST).
test-fast: venv
	$(PY) -m pytest tests -m "not multiprocess and not mnist"

clean-venv:
	rm -rf $(VENV)

# The peers' environment (.venv-peers): Flower 1.23.0 and Horovod 0.28.1 on the same TF,
# from requirements-peers.lock (README, "Beside Flower and Horovod"). Horovod's wheel is
# built once (about 4 min on 2 cores here; cmake and g++) into $(PEER_WHEELS), so a second
# `make peers`, or one after `rm -rf .venv-peers`, takes seconds.
PEERS_VENV   := .venv-peers
PEERS_PY     := $(PEERS_VENV)/bin/python
PEERS_STAMP  := $(PEERS_VENV)/.installed
PEER_WHEELS  ?= $(HOME)/.cache/tfdist/wheels/tf-2.14.1
HOROVOD      := horovod==0.28.1
HOROVOD_ENV  := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITH_GLOO=1 \
                HOROVOD_CPU_OPERATIONS=GLOO HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
                MAKEFLAGS=-j$(shell nproc)

peers: $(PEERS_STAMP)

$(PEERS_STAMP): requirements-peers.lock
	test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-peers.lock
	mkdir -p $(PEER_WHEELS)
	ls $(PEER_WHEELS)/horovod-0.28.1-*.whl >/dev/null 2>&1 || $(HOROVOD_ENV) \
	  $(PEERS_PY) -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps \
	  -w $(PEER_WHEELS) $(HOROVOD)
	$(PEERS_PY) -m pip install --quiet --disable-pip-version-check --no-deps $(PEER_WHEELS)/horovod-0.28.1-*.whl
	$(PEERS_PY) -c "import flwr, horovod.tensorflow.keras as hvd; assert hvd.gloo_built()"
	touch $(PEERS_STAMP)

# The main comparison with the peers' rows beside the suite's (flower_fedavg beside
# fedavg, horovod_allreduce beside allreduce).
peers-compare: venv data peers
	$(PY) -m experiments.compare --peers
