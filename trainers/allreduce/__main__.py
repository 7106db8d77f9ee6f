"""python -m trainers.allreduce (console script tfdist-allreduce): bad flags end with one line before TensorFlow loads."""
from trainers.allreduce import config
from trainers.common import entry


def main() -> None:
  entry.run_package(config, "trainers.allreduce.trainer")


if __name__ == "__main__":
  main()
