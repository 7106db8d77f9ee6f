"""python -m trainers.federated: bad flags end with one line before TensorFlow loads."""
from trainers.federated import config
from trainers.common import entry

entry.run_package(config, "trainers.federated.trainer")
