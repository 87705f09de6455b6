"""LSTM on MNIST rows: each image is a 28-step sequence of 28-pixel rows; 1×128 LSTM, Adam, 10 epochs.

  TFDS_DATA_DIR=../shared/tfds fnets --experiment=lstm_mnist --workdir=/tmp/lstm_mnist

Expected (2-core x86 CPU, jax 0.10.2; seed 0, 54,000 train / 6,000 validation images): 98.93% test accuracy (final
model; the best checkpoint, epoch 8: 98.92%), 99.07% validation, in 4m36s of wall time (10 epochs, the machine
shared with another run).
"""

import ml_collections

from fnets.experiments import common


def get_config() -> ml_collections.ConfigDict:
  c = common.image_classification()
  c.dataset = "mnist"
  c.batch_size = 128
  c.num_epochs = 10
  c.optimizer = "adam"
  c.learning_rate = 3e-3
  c.weight_decay = 0.0
  c.schedule = "warmup_cosine"
  c.warmup_epochs = 0.5
  c.grad_clip_norm = 1.0
  c.model = ml_collections.ConfigDict(dict(name="row_sequence", cell="lstm", hidden_size=128, num_layers=1,
                                           dropout=0.0, unroll=1, impl="fused"))
  return c
