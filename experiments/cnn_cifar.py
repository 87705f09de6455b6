"""CNN on CIFAR-10: 7 conv layers with batch norm, crop+flip augmentation, one-cycle SGD, 12 epochs.

  TFDS_DATA_DIR=../shared/tfds python launch.py --experiment=cnn_cifar --workdir=/tmp/cnn_cifar

Expected (2-core x86 CPU, jax 0.10.2, ../shared/tfds CIFAR-10, which is decoded from JPEG): 85.1% test accuracy
(seed 0: 0.8507) in 52m56s of wall time, ~3.9 min an epoch (233 s median; the first includes compiling).
The margin over 85% is thin: other seeds may land a few tenths either side.
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
