"""Probe (issue 23, item 1): TFF's worker_binary materializes a client's dataset from the
prepared TFRecords on its own host. Run: .venv/bin/python docs/probe_client_data_in_worker_binary.py
Found: it works (the label sum of clients 0-2 matches), but inside a TFF tf computation a
tensor's `==` is Python identity (always False, so a filter keeps nothing): use tf.equal."""
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tensorflow_federated as tff

from trainers.federated import executors

DATA_DIR = os.environ.get("TFDS_DATA_DIR", "../shared/data/tensorflow_datasets")
FILES = [os.path.join(DATA_DIR, "mnist", "3.0.1", "mnist-train.tfrecord-00000-of-00001")]
owner = (np.arange(60000) % 100).astype(np.int16)  # client k: examples k, k+100, ...
FEATURES = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}

@tff.tensorflow.computation(tf.int32)
def label_sum(client):
  ds = tf.data.TFRecordDataset(FILES).enumerate()
  ds = ds.filter(lambda i, r: tf.equal(tf.gather(owner, i), tf.cast(client, tf.int16)))
  def decode(i, r):
    ex = tf.io.parse_single_example(r, FEATURES)
    img = tf.reshape(tf.io.decode_png(ex["image"], channels=1), [28, 28, 1])
    return tf.cast(img, tf.float32), tf.cast(ex["label"], tf.int32)
  ds = ds.map(decode).shuffle(600, seed=7).batch(10)
  return ds.reduce(tf.constant(0), lambda s, b: s + tf.reduce_sum(b[1]))

@tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
def run(clients):
  return tff.federated_sum(tff.federated_map(label_sum, clients))

with executors.private_executor_service() as address:
  executors.install_context([address])
  import time  # pylint: disable=g-import-not-at-top
  t = time.time()
  got = run([0, 1, 2])
  print("worker_binary result", got, "in %.2f s" % (time.time() - t))
builder = tfds.builder("mnist", data_dir=DATA_DIR)
y = np.concatenate([b["label"] for b in tfds.as_numpy(
    builder.as_dataset(split="train", batch_size=10000, shuffle_files=False))])
print("expected", int(y[owner < 3].sum()))
