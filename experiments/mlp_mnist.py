"""MLP on MNIST: 784 → 1024 → 1024 → 10 with ReLU and dropout, one-cycle SGD, 10 epochs.

  TFDS_DATA_DIR=../shared/tfds python launch.py --experiment=mlp_mnist --workdir=/tmp/mlp_mnist

Expected (2-core x86 CPU, jax 0.10.2): 98.58% test accuracy in 2m09s of wall time.
"""

import ml_collections

from experiments import common


def get_config() -> ml_collections.ConfigDict:
  c = common.image_classification()
  c.dataset = "mnist"
  c.batch_size = 128
  c.num_epochs = 10
  c.learning_rate = 0.05
  c.warmup_epochs = 1.0
  c.model = ml_collections.ConfigDict(dict(name="mlp", hidden_features=(1024, 1024), activation="relu",
                                           dropout=0.2))
  return c
