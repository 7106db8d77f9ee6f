"""python -m trainers.federated (console script tfdist-fedavg): bad flags end with one line before TensorFlow loads."""
from trainers.federated import config
from trainers.common import entry


def main() -> None:
  entry.run_package(config, "trainers.federated.trainer")


if __name__ == "__main__":
  main()
