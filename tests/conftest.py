import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
METADATA = os.path.join(ROOT, "tests", "tfds_metadata")

import fnets  # noqa: E402,F401  (XLA flags before JAX starts)


@pytest.fixture
def mock_tfds():
  """TFDS datasets of random examples with the real features and splits (from tests/tfds_metadata)."""
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=METADATA):
    yield
