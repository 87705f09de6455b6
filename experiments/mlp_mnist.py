"""MLP on MNIST: 784 → 1024 → 1024 → 10 with ReLU and dropout, one-cycle SGD, 10 epochs.

  TFDS_DATA_DIR=../shared/tfds fnets --experiment=mlp_mnist --workdir=/tmp/mlp_mnist

Expected (2-core x86 CPU, jax 0.10.2; seed 0, 54,000 train / 6,000 validation images): 98.55% test accuracy (final
model, also the best checkpoint), 98.53% validation, 10 epochs. Wall time 4m34s on a machine shared with another
run and the test suite; alone ~2 minutes.
"""

import ml_collections

from fnets.experiments import common


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
