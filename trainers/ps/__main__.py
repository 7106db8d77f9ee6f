"""python -m trainers.ps: bad flags end with one line before TensorFlow loads."""
from trainers.ps import config
from trainers.common import entry

entry.run_package(config, "trainers.ps.trainer")
