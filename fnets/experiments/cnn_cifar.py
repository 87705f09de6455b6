"""CNN on CIFAR-10, airbench94's recipe (arXiv 2404.00498) from fnets' config-built CNN, on all 50,000 images.

  TFDS_DATA_DIR=../shared/tfds python launch.py --experiment=cnn_cifar --workdir=/tmp/cnn_cifar

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

Cost (benchmarks/cnn_cifar_recipe.py, XLA's count): 612 MFLOP per training image (the previous network: 217),
1,222 per test image with the 6 TTA views; 8 epochs (776 steps of 512) = 0.243 PFLOP. The step: 2.3-2.7 s at batch
512, 117-134 GFLOP/s, 0.78-0.81× the same step in PyTorch (benchmarks/cnn_cifar_torch.py, two runs, quiet host).

Measured (../shared/tfds, whose CIFAR-10 is decoded from JPEG; 2-core x86 CPU, jax 0.10.2; test accuracy of the
final model with the TTA; wall time of the whole command):
  seed 0 (commit bb553e0): 90.03%, test loss 0.4884, 47m56s (the step before the max-pool rule; the machine
      shared for ~15 of its minutes with short benchmarks)
  seed 1 (commit 33b7d9b): 90.08%, test loss 0.4782, 37m09s (169-231 examples/s)
  seed 2 (the code of 33b7d9b, at commit de42f71): 90.22%, test loss 0.4793, 37m38s
  median 90.08%: below issue 14's 92%.
12 epochs, the most that fit the hour here (`--config.num_epochs=12 --config.warmup_epochs=2.76`; warmup_epochs
is not derived from num_epochs by an override), seed 0, commit d883fce: 91.18%, test loss 0.4592, 52m37s.
airbench94's own PyTorch code on the same data (benchmarks/airbench94_torch.py), 8 epochs of 512, seed 0: 90.10%; at its own 9.9 epochs of 1,024: 90.61% (94.01% on the original images).
Before PyTorch's init and the BN-only bias rate (commits f8e0d25, 04cfc0f): seeds 0 and 1 90.57% and 89.98%, in
43m54s and 45m03s. The previous 7-layer network reached 84.82% in 12 epochs.
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
