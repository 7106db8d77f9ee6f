"""Both routes to a prepared MNIST, on small generated files: the four IDX files, and
TFDS's own download with its download manager pointed at a loopback stand-in for the
mirror (never the network)."""

import contextlib
import functools
import gzip
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from experiments import data as data_route
from tests import helpers

N_TRAIN, N_TEST = 50, 20


def write_idx(directory, n_train=N_TRAIN, n_test=N_TEST, gz=True) -> dict:
  """The four MNIST IDX files, made up; returns (images, labels) per split."""
  rng = np.random.default_rng(0)
  made = {}
  for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n, dtype=np.uint8)
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    with opener(os.path.join(directory, f"{prefix}-images-idx3-ubyte{suffix}"), "wb") as f:
      f.write((2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
              + x.tobytes())
    with opener(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{suffix}"), "wb") as f:
      f.write((2049).to_bytes(4, "big") + n.to_bytes(4, "big") + y.tobytes())
    made[split] = (x, y)
  return made


def _examples(x, y) -> list:
  return sorted((int(label), image.tobytes()) for image, label in zip(x, y))


@pytest.mark.parametrize("gz", [True, False])
def test_the_idx_route_writes_the_dataset_the_suite_reads(tmp_path, gz):
  idx = tmp_path / "idx"
  idx.mkdir()
  made = write_idx(str(idx), gz=gz)
  data_dir = str(tmp_path / "tfds")
  data_route.prepare_from_idx(str(idx), data_dir, check_sums=False)
  from trainers.common import data  # pylint: disable=g-import-not-at-top
  for split, (x, y) in made.items():
    got = data.load_split("mnist", split, data_dir)
    assert len(got) == len(y)  # the same examples (TFDS stores them in its own order)
    assert _examples(got.x[..., 0], got.y) == _examples(x, y)
  assert data_route.is_prepared(data_dir)


def test_the_idx_route_checks_the_official_sums_and_the_files(tmp_path):
  write_idx(str(tmp_path))
  with pytest.raises(data_route.DataRouteError, match="is not the official"):
    data_route.verify(data_route.find_idx(str(tmp_path)))
  os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(data_route.DataRouteError, match="no t10k-labels-idx1-ubyte"):
    data_route.find_idx(str(tmp_path))


@contextlib.contextmanager
def stand_in_mirror(directory):
  """A loopback HTTP server for `directory` (the mirror TFDS downloads from)."""
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}/"
  finally:
    server.shutdown()
    server.server_close()


def _stand_in_builder(url, data_dir, monkeypatch):
  from tensorflow_datasets.image_classification import mnist  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(mnist, "_TRAIN_EXAMPLES", N_TRAIN)
  monkeypatch.setattr(mnist, "_TEST_EXAMPLES", N_TEST)

  class StandIn(mnist.MNIST, skip_registration=True):
    name = "mnist"
    URL = url

  return StandIn(data_dir=data_dir)


def test_the_download_route_is_tfds_own_download_and_prepare(tmp_path, monkeypatch):
  mirror = tmp_path / "mirror"
  mirror.mkdir()
  made = write_idx(str(mirror))
  data_dir = str(tmp_path / "tfds")
  with stand_in_mirror(str(mirror)) as url:
    data_route.prepare_by_download(data_dir, _stand_in_builder(url, data_dir, monkeypatch))
  from trainers.common import data  # pylint: disable=g-import-not-at-top
  got = data.load_split("mnist", "train", data_dir)
  assert _examples(got.x[..., 0], got.y) == _examples(*made["train"])


def test_offline_the_download_route_names_both_ways_out(tmp_path, monkeypatch):
  with stand_in_mirror(str(tmp_path)) as url:
    pass  # closed: nothing listens there any more
  with pytest.raises(data_route.DataRouteError) as e:
    data_route.prepare_by_download(str(tmp_path / "tfds"),
                                   _stand_in_builder(url, str(tmp_path), monkeypatch))
  assert "TFDS_DATA_DIR" in str(e.value) and "make data IDX=" in str(e.value)
  assert "\n" not in str(e.value)


def test_the_command_does_nothing_when_the_copy_is_prepared():
  proc = subprocess.run([sys.executable, "-m", "experiments.data",
                         f"--data_dir={helpers.tfds_dir()}"], capture_output=True, text=True,
                        timeout=120, cwd=helpers.REPO, env=helpers.base_env("data"))
  assert proc.returncode == 0 and "is prepared in" in proc.stdout
