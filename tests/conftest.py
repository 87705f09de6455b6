import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
METADATA = os.path.join(ROOT, "tests", "tfds_metadata")

# At the suite's sizes compiling is most of the time, so the pytest process sets, before it starts its xdist
# workers (which inherit the environment, as do the launches they start):
# - one cache dir for the whole suite (fnets' decoded datasets, JAX's compiled programs): its many small runs
#   compile the same steps; every compilation is cached, not only those of over a second;
# - XLA with most of its optimisations off (as the notebook tests had it): what is computed is the same, the
#   suite's user time drops by a third (13m48s → 9m36s measured), and every test passes as with them.
if "PYTEST_XDIST_WORKER" not in os.environ:
  os.environ["FNETS_CACHE_DIR"] = _CACHE_DIR = tempfile.mkdtemp(prefix="fnets_test_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import fnets  # noqa: E402,F401  (XLA flags before JAX starts)


@pytest.fixture
def mock_tfds():
  """TFDS datasets of random examples with the real features and splits (from tests/tfds_metadata)."""
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=METADATA):
    yield


def pytest_unconfigure(config):
  if "PYTEST_XDIST_WORKER" not in os.environ and "_CACHE_DIR" in globals():
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
