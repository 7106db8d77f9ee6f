import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests import helpers  # noqa: E402


@pytest.fixture
def mnist_dir():
  path = helpers.tfds_dir()
  if not os.path.isdir(os.path.join(path, "mnist")):
    pytest.fail(f"the prepared MNIST copy is missing from {path} (set TFDS_DATA_DIR)")
  return path
