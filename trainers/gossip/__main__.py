"""python -m trainers.gossip (console script tfdist-gossip): bad flags end with one line before TensorFlow loads."""
from trainers.gossip import config
from trainers.common import entry


def main() -> None:
  entry.run_package(config, "trainers.gossip.trainer")


if __name__ == "__main__":
  main()
