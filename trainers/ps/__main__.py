"""python -m trainers.ps (console script tfdist-ps): bad flags end with one line before TensorFlow loads."""
from trainers.ps import config
from trainers.common import entry


def main() -> None:
  entry.run_package(config, "trainers.ps.trainer")


if __name__ == "__main__":
  main()
