"""CNN on CIFAR-10: 7 conv layers with batch norm, crop+flip augmentation, one-cycle SGD, 12 epochs.

  TFDS_DATA_DIR=../shared/tfds python launch.py --experiment=cnn_cifar --workdir=/tmp/cnn_cifar

Expected (2-core x86 CPU, jax 0.10.2, ../shared/tfds CIFAR-10, which is decoded from JPEG; seed 0, 45,000 train /
5,000 validation images): 84.82% test accuracy (final model, also the best checkpoint), 84.92% validation, 12
epochs of 87 steps. Wall time: 84m51s on a machine shared with another run and test suites the whole time
(median 119 examples/s); alone, the same network took ~53 minutes on all 50,000 images.
"""

import ml_collections

from experiments import common


def get_config() -> ml_collections.ConfigDict:
  c = common.image_classification()
  c.dataset = "cifar10"
  c.batch_size = 512
  c.num_epochs = 12
  c.log_every_steps = 20
  c.augment = True
  c.learning_rate = 0.4
  c.warmup_epochs = 2.4
  c.label_smoothing = 0.2
  c.model = ml_collections.ConfigDict(dict(
      name="cnn", conv_features=(24, 32, 32, 128, 128, 128, 128), kernel_size=3, strides=1, padding="SAME",
      pool_after=(1, 3, 5, 6), pool="max", activation="relu", batch_norm=True, dense_features=(), dropout=0.0))
  return c
