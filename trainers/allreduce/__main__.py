"""python -m trainers.allreduce: bad flags end with one line before TensorFlow loads."""
from trainers.allreduce import config
from trainers.common import entry

entry.run_package(config, "trainers.allreduce.trainer")
