"""CNN on CIFAR-10, airbench94's recipe (arXiv 2404.00498) from fnets' config-built CNN, on all 50,000 images.

  TFDS_DATA_DIR=../shared/tfds fnets --experiment=cnn_cifar --workdir=/tmp/cnn_cifar

The network (1.97M parameters): a frozen 2×2 patch-whitening conv (24 filters, set from the training images) →
GELU → three blocks of conv→max-pool→BN→GELU, conv→BN→GELU, widths 64/256/256, BN without scale (momentum
0.6), Dirac-initialised convs, the other kernels as PyTorch initialises them (`kernel_init="torch"`) → global max
pool → bias-free linear layer, logits × 1/9. Training: Nesterov SGD (momentum 0.85), one-cycle from 0.2× to the
peak at 23% of training, then to 0.07×; BN shifts at 64× the rate, weight decay on all parameters; label
smoothing 0.2; alternating flip and ±2-pixel translation; the whitening bias frozen after 3 epochs;
lookahead-EMA every 5 steps from epoch 3; flip+translate test-time augmentation. airbench's batch is 1,024; here
512, with its rate and decay in per-example terms (lr 11.5 per 1,024 examples of summed loss → 0.75 for the mean
over 512 examples; decay 0.0153 / 11.5 of the rate). No held-out split: the recipe selects nothing, and the
reported figure is the final model's test accuracy.

Expected (../shared/tfds, whose CIFAR-10 is decoded from JPEG; 2-core x86 CPU; final model with the TTA; whole
command): 90.03 / 90.08 / 90.22% test accuracy for seeds 0 / 1 / 2 (median 90.08%), ~37-48 min. With 12 epochs
(`--config.num_epochs=12 --config.warmup_epochs=2.76`; warmup_epochs does not follow num_epochs), seed 0: 91.18%
in 52m37s. airbench94's own code on the same data and 8 epochs of 512: 90.10% (docs/results.md has the runs, their
history and the anchor; benchmarks/README.md the step's cost and speed against PyTorch).
"""

import ml_collections

from fnets.experiments import common


def get_config() -> ml_collections.ConfigDict:
  c = common.image_classification()
  c.dataset = "cifar10"
  c.validation_percent = 0
  c.batch_size = 512
  c.num_epochs = 8  # airbench94: 9.9; 8 fit the hour on 2 CPU cores (see below)
  c.log_every_steps = 20
  c.augment = True
  c.crop_padding = 2
  c.flip = True
  c.alternating_flip = True
  c.tta = "flip_translate"
  c.learning_rate = 11.5 * c.batch_size / (1024 * (1 + 1 / (1 - 0.85)))  # airbench's, per example: 0.75
  c.momentum = 0.85
  c.nesterov = True
  c.weight_decay = 0.0153 / 11.5  # airbench's decay, decoupled from the rate
  c.decay_biases = True
  c.bias_lr_scale = 64.0
  c.schedule = "onecycle"
  c.warmup_epochs = 0.23 * c.num_epochs
  c.lr_start_fraction = 0.2
  c.lr_end_fraction = 0.07
  c.label_smoothing = 0.2
  c.whiten_bias_epochs = 3.0
  c.lookahead_every = 5
  c.lookahead_start_epochs = 3.0
  c.lookahead_decay = 0.95
  c.lookahead_decay_power = 3.0
  c.model = ml_collections.ConfigDict(dict(
      name="cnn", whiten_kernel=2, conv_features=(64, 64, 256, 256, 256, 256), kernel_size=3, strides=1,
      padding="SAME", pool_after=(0, 2, 4), pool="max", pool_before_norm=True, global_pool="max",
      activation="gelu", batch_norm=True, norm_scale=False, bn_momentum=0.6, dirac_init=True, dense_features=(),
      dropout=0.0, logit_scale=1 / 9, logit_bias=False, kernel_init="torch"))
  return c
