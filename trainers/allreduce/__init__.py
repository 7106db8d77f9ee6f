"""All-reduce: tf.distribute.MultiWorkerMirroredStrategy (trainer.py; flags and
config in config.py, TF-free). Run it with `python -m trainers.allreduce`."""
