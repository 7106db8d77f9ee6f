"""The shared data path: sharding, synthetic data, offline TFDS loading and its errors."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from trainers.common import data, partition


@pytest.mark.parametrize("n,shards", [(60000, 2), (10, 3), (7, 7)])
def test_iid_shards_are_disjoint_complete_and_balanced(n, shards):
  parts = partition.iid(np.zeros(n), shards, seed=5)
  together = np.concatenate(parts)
  assert len(parts) == shards and len(together) == n and len(np.unique(together)) == n
  assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_sharding_is_reproducible_from_the_seed_and_changes_with_it():
  a = partition.iid(np.zeros(1000), 2, seed=1)[0]
  assert np.array_equal(a, partition.iid(np.zeros(1000), 2, seed=1)[0])
  assert not np.array_equal(a, partition.iid(np.zeros(1000), 2, seed=2)[0])
  with pytest.raises(ValueError):
    partition.iid(np.zeros(10), 11, seed=0)


def test_train_order_is_reproducible_from_the_seed():
  arr = data.synthetic_split("train", 200)
  first = lambda s: next(iter(data.train_dataset(arr, 50, seed=s)))[1].numpy()
  assert np.array_equal(first(3), first(3))
  assert not np.array_equal(first(3), first(4))


def test_synthetic_has_mnist_shapes_and_is_learnable_by_nearest_class_mean():
  train, test = data.synthetic_split("train", 2000), data.synthetic_split("test", 500)
  assert train.x.shape == (2000, 28, 28, 1) and train.x.dtype == np.uint8
  assert set(np.unique(train.y)) == set(range(10))
  tx, ex = train.x.astype(np.float32) / 255, test.x.astype(np.float32) / 255
  means = np.stack([tx[train.y == c].mean(0) for c in range(10)])
  dists = ((ex[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
  assert (dists.argmin(1) == test.y).mean() > 0.9  # learnable...
  assert np.abs(ex - means[test.y]).mean() > 0.1  # ...but noisy, not copies of the prototypes


def test_finite_repeat_and_unshuffled_order():
  arr = data.synthetic_split("train", 30)
  batches = list(data.train_dataset(arr, 10, seed=None, repeat=2, drop_remainder=False,
                                    shuffle=False))
  assert len(batches) == 6
  np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in batches[:3]]), arr.y)


def test_eval_dataset_covers_the_whole_split_once():
  arr = data.synthetic_split("test", 2500)
  assert sum(int(y.shape[0]) for _, y in data.eval_dataset(arr, 1000)) == 2500


def test_real_mnist_loads_offline(mnist_dir):
  test = data.load_split("mnist", "test", mnist_dir)
  assert test.x.shape == (10000, 28, 28, 1) and len(np.unique(test.y)) == 10
  assert test.x.dtype == np.uint8 and test.x.max() == 255


def test_the_split_is_cached_as_arrays_and_read_back_identically(mnist_dir, tmp_path,
                                                                   monkeypatch):
  monkeypatch.setenv("TFDIST_CACHE_DIR", str(tmp_path / "cache"))
  path = data.cache_path("mnist", "test", mnist_dir)
  assert path.startswith(str(tmp_path / "cache")) and not os.path.exists(path)
  first = data.load_split("mnist", "test", mnist_dir)    # TFRecords, then the cache
  assert os.path.exists(path)

  def no_tfrecords(*args):
    raise AssertionError(f"read the TFRecords again: {args}")
  monkeypatch.setattr(data, "_prepared_builder", no_tfrecords)
  second = data.load_split("mnist", "test", mnist_dir)   # the cache, or the assert above
  np.testing.assert_array_equal(first.x, second.x)
  np.testing.assert_array_equal(first.y, second.y)
  assert second.x.dtype == np.uint8 and second.y.dtype == np.int32


def test_cache_key_follows_the_prepared_files(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDIST_CACHE_DIR", str(tmp_path / "cache"))
  (tmp_path / "d" / "mnist" / "3.0.1").mkdir(parents=True)
  f = tmp_path / "d" / "mnist" / "3.0.1" / "mnist-test.tfrecord"
  f.write_bytes(b"a")
  before = data.cache_path("mnist", "test", str(tmp_path / "d"))
  assert before == data.cache_path("mnist", "test", str(tmp_path / "d"))
  assert data.cache_path("mnist", "train", str(tmp_path / "d")) != before
  f.write_bytes(b"ab")  # re-prepared: another size
  assert data.cache_path("mnist", "test", str(tmp_path / "d")) != before
  assert data.cache_path("mnist", "test", str(tmp_path / "none")) is None


def test_pipeline_standardises_pixels(mnist_dir):
  test = data.load_split("mnist", "test", mnist_dir)
  x = np.concatenate([b.numpy() for b, _ in data.eval_dataset(test)])
  assert x.dtype == np.float32 and abs(float(x.mean())) < 0.05 and 0.9 < float(x.std()) < 1.1


def test_missing_dataset_is_one_clear_line_without_network_stall(tmp_path):
  start = time.monotonic()
  with pytest.raises(data.DataError) as e:
    data.load_split("mnist", "train", str(tmp_path))
  msg = str(e.value)
  assert time.monotonic() - start < 20
  assert "\n" not in msg and "mnist" in msg and str(tmp_path) in msg and "--data_dir" in msg


def test_trainer_with_missing_data_exits_nonzero_with_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "trainers.allreduce", f"--data_dir={tmp_path}",
       f"--run_dir={tmp_path / 'run'}"], cwd=helpers.REPO, env=helpers.base_env("data"),
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 66  # cluster.exits.DATA
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and str(tmp_path) in errors[0]
  assert "Traceback" not in proc.stderr


def test_a_worker_reads_the_same_examples_from_the_files_as_the_arrays_hold(mnist_dir):
  """PS workers read their shard from the prepared files (read_prepared): the same
  examples, in the same order, at the same indices as the chief's arrays."""
  arrays = data.load_split("mnist", "test", mnist_dir)
  owner = np.arange(len(arrays)) % 3 == 1  # every third example from index 1
  ds = data.read_prepared("mnist", "test", mnist_dir, keep=lambda i: tf.gather(owner, i))
  x, y = map(np.stack, zip(*[(a.numpy(), b.numpy()) for a, b in ds]))
  np.testing.assert_array_equal(y, arrays.y[owner])
  np.testing.assert_array_equal(x, arrays.x[owner])
