"""TF's multi-worker Keras tutorial (tensorflow.org/tutorials/distribute/
multi_worker_with_keras), shortened and with random data instead of a download: the
same strategy, model and fit calls, run unmodified under any launcher that sets
TF_CONFIG."""
import json
import os

import numpy as np
import tensorflow as tf

per_worker_batch_size = 64
tf_config = json.loads(os.environ["TF_CONFIG"])
num_workers = len(tf_config["cluster"]["worker"])

strategy = tf.distribute.MultiWorkerMirroredStrategy()

global_batch_size = per_worker_batch_size * num_workers
x = np.random.default_rng(0).random((1024, 28, 28), dtype=np.float32)
y = np.random.default_rng(1).integers(0, 10, 1024)
dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1024).repeat().batch(
    global_batch_size)

with strategy.scope():
  model = tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(28, 28)),
      tf.keras.layers.Reshape(target_shape=(28, 28, 1)),
      tf.keras.layers.Conv2D(8, 3, activation="relu"),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(32, activation="relu"),
      tf.keras.layers.Dense(10),
  ])
  model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                optimizer=tf.keras.optimizers.SGD(learning_rate=0.001),
                metrics=["accuracy"])

model.fit(dataset, epochs=2, steps_per_epoch=5, verbose=2)
print("trained to the end", flush=True)
