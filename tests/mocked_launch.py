"""Runs launch.py as a user would, but with TFDS mocked (random examples, real features and splits).

  python tests/mocked_launch.py --experiment=cnn_mnist --config.max_steps=2 ...
FNETS_MOCK_EXAMPLES sets the number of examples per split; FNETS_OFFLINE=1 makes every network connection fail.
"""

import os
import runpy
import socket
import sys

import tensorflow_datasets as tfds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

if os.environ.get("FNETS_OFFLINE"):
  def _no_network(*args, **kwargs):
    raise OSError("network disabled by FNETS_OFFLINE")
  socket.create_connection = _no_network
  runpy.run_path(os.path.join(ROOT, "launch.py"), run_name="__main__")
else:
  with tfds.testing.mock_data(num_examples=int(os.environ.get("FNETS_MOCK_EXAMPLES", "64")),
                              policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=os.path.join(ROOT, "tests", "tfds_metadata")):
    runpy.run_path(os.path.join(ROOT, "launch.py"), run_name="__main__")
