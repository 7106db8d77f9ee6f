"""The data path every approach shares: TFDS loading, synthetic data, the input pipeline.

Datasets are read once into memory (MNIST-sized sets are ~50 MB as float32), so
sharding is by example index (trainers/common/partition.py), not by file: the prepared
splits are one tfrecord file each, which tf.distribute's FILE auto-shard policy cannot
split.
"""

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow as tf

from cluster import posix
from trainers.common.errors import DataError
from trainers.common.flags import SYNTHETIC, resolve_data_dir

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


# Inputs are standardised with MNIST's pixel mean and std (as the seed's PyTorch
# example does): zero-centred inputs make the tanh MLP train markedly faster.
# Arrays keep raw uint8 pixels (4x smaller, cheap to ship inside a graph);
# standardisation happens in the tf.data pipeline.
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081


def standardize(images, labels):
  """uint8 pixels -> standardised float32, inside a tf.data map."""
  x = tf.cast(images, tf.float32) / 255.0
  return (x - PIXEL_MEAN) / PIXEL_STD, labels


@dataclasses.dataclass(frozen=True)
class Arrays:
  """One split in memory: uint8 images (N, 28, 28, 1), int32 labels."""
  x: np.ndarray
  y: np.ndarray

  def __len__(self) -> int:
    return len(self.y)

  def take(self, indices: np.ndarray) -> "Arrays":
    return Arrays(self.x[indices], self.y[indices])


def synthetic_split(split: str, num_examples: int | None = None, seed: int = 0) -> Arrays:
  """A learnable 28x28x1 10-class set: one fixed random pattern per class plus noise.

  Class prototypes are the same for every split (seed 1234) so a model trained on
  `train` generalises to `test`; the noise depends on the split and `seed`.
  """
  protos = np.random.default_rng(1234).uniform(0.0, 1.0, (NUM_CLASSES,) + IMAGE_SHAPE)
  n = num_examples or (6000 if split == "train" else 1000)
  rng = np.random.default_rng([seed, 0 if split == "train" else 1])
  y = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  x = 0.5 * protos[y] + 0.5 * rng.uniform(0.0, 1.0, (n,) + IMAGE_SHAPE)
  return Arrays(np.round(x * 255.0).astype(np.uint8), y)


def _tfds_offline():
  """Imports tensorflow_datasets with its GCS probing switched off."""
  # With a prepared copy on disk TFDS needs no network, but it may still probe
  # GCS (and trigger Google auth) for metadata; this is TFDS's documented way to
  # stop that, so an offline run never stalls on a connection attempt.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.core.utils.gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
  return tfds


def load_split(dataset: str, split: str, data_dir: str | None = None,
               synthetic_examples: int | None = None) -> Arrays:
  """Loads `split` ("train" or "test") of `dataset` fully into memory.

  Raises DataError (one line: the dataset, the directory searched, the fix) when
  a TFDS dataset is unknown, not prepared offline, or not 28x28x1 with 10 classes.
  """
  if dataset == SYNTHETIC:
    return synthetic_split(split, synthetic_examples)
  cached = cache_path(dataset, split, data_dir)
  if cached and os.path.exists(cached):
    try:
      with np.load(cached) as f:
        return Arrays(f["x"], f["y"])
    except (OSError, ValueError, KeyError):
      pass  # unreadable: read the TFRecords again and rewrite it
  tfds, builder = _prepared_builder(dataset, data_dir)
  x, y = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
  arrays = Arrays(x.astype(np.uint8), y.astype(np.int32))
  if cached:
    _write_cache(cached, arrays)
  return arrays


def cache_path(dataset: str, split: str, data_dir: str | None) -> str | None:
  """Where the split's arrays are cached: every task of every run would otherwise
  parse the same TFRecords (seconds of each task's start-up). The name carries a
  digest of the prepared files (paths, sizes, times), so a changed dataset is
  read afresh. $TFDIST_CACHE_DIR, else ~/.cache/tfdist; None when the dataset is
  not on disk (the TFDS path then says why)."""
  root = os.path.join(resolve_data_dir(data_dir) or "", dataset)
  if not os.path.isdir(root):
    return None
  digest = hashlib.sha256(os.path.abspath(root).encode())
  for base, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    for name in sorted(files):
      st = os.stat(os.path.join(base, name))
      digest.update(f"{os.path.relpath(os.path.join(base, name), root)}:{st.st_size}:"
                    f"{st.st_mtime_ns}".encode())
  cache = os.environ.get("TFDIST_CACHE_DIR") or os.path.join(os.path.expanduser("~"),
                                                              ".cache", "tfdist")
  return os.path.join(cache, f"{dataset}-{split}-{digest.hexdigest()[:16]}.npz")


def _write_cache(path: str, arrays: Arrays) -> None:
  """Written then renamed (concurrent tasks may race: the last rename wins, whole);
  a cache that cannot be written is only a slower start."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with posix.atomic_path(path, ".npz") as tmp:
      np.savez(tmp, x=arrays.x, y=arrays.y)
  except OSError:
    pass


def read_prepared(dataset: str, split: str, data_dir: str | None = None,
                  keep=None) -> tf.data.Dataset:
  """(uint8 image, int32 label) of a prepared TFDS split, read from its files by
  whichever process runs the pipeline, in load_split's order (the same indices).
  `keep(index)` (a TF predicate on the example's index) drops examples before their
  PNG is decoded: a PS worker decodes only its own shard, from its own host's copy."""
  tfds, builder = _prepared_builder(dataset, data_dir)
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={"image": tfds.decode.SkipDecoding()}).enumerate()
  if keep is not None:
    ds = ds.filter(lambda i, ex: keep(i))
  return ds.map(lambda i, ex: (tf.io.decode_png(ex["image"], channels=IMAGE_SHAPE[-1]),
                               tf.cast(ex["label"], tf.int32)))


def num_examples(dataset: str, split: str, data_dir: str | None = None) -> int:
  """Size of a prepared TFDS split, from its metadata (no data is read)."""
  _, builder = _prepared_builder(dataset, data_dir)
  return builder.info.splits[split].num_examples


def _prepared_builder(dataset: str, data_dir: str | None):
  """(tfds, builder) for a prepared, suite-compatible dataset, or DataError (one line:
  the dataset, the directory searched, the fix)."""
  tfds = _tfds_offline()
  searched = resolve_data_dir(data_dir)
  try:
    builder = tfds.builder(dataset, data_dir=searched)
  except Exception as e:  # DatasetNotFoundError and friends
    raise DataError(f"unknown dataset {dataset!r}: {str(e).splitlines()[0]}") from e
  if not builder.is_prepared():
    raise DataError(
        f"dataset {dataset!r} is not prepared in {searched} and this machine cannot "
        f"download it; point --data_dir (or TFDS_DATA_DIR) at a directory holding "
        f"{dataset}/<version>/, e.g. ../shared/data/tensorflow_datasets")
  image = builder.info.features["image"]
  label = builder.info.features["label"]
  if tuple(image.shape) != IMAGE_SHAPE or label.num_classes != NUM_CLASSES:
    raise DataError(f"dataset {dataset!r} has images {tuple(image.shape)} and "
                    f"{label.num_classes} classes; the suite needs 28x28x1 with 10")
  return tfds, builder


def steps_per_epoch(num_examples: int, examples_per_step: int, cap: int | None = None) -> int:
  """Steps in one pass over the training set when each step consumes
  `examples_per_step` examples across the cluster (all-reduce: batch x workers; PS
  async: one worker's batch; PS sync: batch x workers); `cap` (--steps_per_epoch)
  wins. Each worker's shard then lasts exactly that many steps, up to rounding."""
  return cap or max(1, num_examples // examples_per_step)


def train_dataset(data: Arrays, batch_size: int, seed: int | None, repeat: int = -1,
                  drop_remainder: bool = True, shuffle: bool = True) -> tf.data.Dataset:
  """Shuffled (reproducibly, from `seed`), batched training input, repeated `repeat`
  times (-1: forever)."""
  ds = tf.data.Dataset.from_tensor_slices((data.x, data.y))
  return batched(ds, len(data) if shuffle else 0, batch_size, seed, repeat, drop_remainder)


def batched(ds: tf.data.Dataset, shuffle_buffer: int, batch_size: int, seed: int | None,
            repeat: int = -1, drop_remainder: bool = True) -> tf.data.Dataset:
  """shuffle -> repeat -> batch -> standardise -> prefetch, the one training pipeline.

  shuffle_buffer 0 keeps the order (for exact-arithmetic tests); repeat -1 is forever.
  """
  if shuffle_buffer:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if repeat != 1:
    ds = ds.repeat(repeat)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  return ds.map(standardize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_dataset(data: Arrays, batch_size: int = 1000) -> tf.data.Dataset:
  """The whole split, in order, once (the last batch may be short)."""
  ds = tf.data.Dataset.from_tensor_slices((data.x, data.y)).batch(batch_size)
  return ds.map(standardize).prefetch(2)
