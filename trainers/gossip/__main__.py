"""python -m trainers.gossip: bad flags end with one line before TensorFlow loads."""
from trainers.gossip import config
from trainers.common import entry

entry.run_package(config, "trainers.gossip.trainer")
