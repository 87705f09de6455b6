"""cnn_cifar's train step in fnets against the same network and step in PyTorch, interleaved in one process.

  pip install torch==2.13.0   # CPU build; only this benchmark needs it
  python benchmarks/cnn_cifar_torch.py [--rounds=7] [--steps=2] [--batch_size=512] [--smoke]

Both steps do the same work on a batch of random uint8 images: normalise, augment (random translation by up to
±2 pixels from the reflect-padded image, horizontal flip), forward (2×2 whitening conv → GELU → three blocks
conv→max-pool→BN→GELU, conv→BN→GELU of widths 64/256/256 → global max pool → linear, logits × 1/9),
label-smoothed cross-entropy, backward, and Nesterov SGD with weight decay, whitening kernel and BN scales
frozen. fnets' step is the jitted step of `classify.setup` at the experiment's config (with its lookahead average
and alternating flip), on a batch already on the device; PyTorch's runs channels_last on 2 threads. Rounds
alternate A, B, A, B, ...; the figure is the median of the per-round ratios. The first steps of each (compiling,
warm-up) are not timed. Without torch, it times fnets' step alone and says so. --smoke: batch 8, 1 round of 1 step.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import fnets  # noqa: F401  (XLA flags before JAX starts)
import jax
import numpy as np

from cnn_cifar_recipe import build, interleaved
from fnets.experiments import cnn_cifar


def torch_step(config, batch_size: int):
  """The same network and step in PyTorch; returns a function that runs one step."""
  import torch
  import torch.nn.functional as F
  from torch import nn
  torch.set_num_threads(2)
  torch.manual_seed(0)
  m = config.model
  gelu = lambda: nn.GELU(approximate="tanh")  # flax's nn.gelu is the tanh form
  bn = lambda c: nn.BatchNorm2d(c, momentum=1 - m.bn_momentum)

  def block(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2), bn(c_out), gelu(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), bn(c_out), gelu()]

  widths = m.conv_features[::2]
  whiten = 2 * m.whiten_kernel ** 2 * 3
  net = nn.Sequential(nn.Conv2d(3, whiten, m.whiten_kernel, bias=True), gelu(),
                      *block(whiten, widths[0]), *block(widths[0], widths[1]), *block(widths[1], widths[2]),
                      nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(widths[2], 10, bias=False))
  net[0].weight.requires_grad_(False)
  for module in net.modules():
    if isinstance(module, nn.BatchNorm2d):
      module.weight.requires_grad_(False)
  net = net.to(memory_format=torch.channels_last)
  biases = [p for n, p in net.named_parameters() if p.requires_grad and p.ndim == 1]
  kernels = [p for n, p in net.named_parameters() if p.requires_grad and p.ndim > 1]
  lr = config.learning_rate
  opt = torch.optim.SGD([dict(params=kernels, lr=lr), dict(params=biases, lr=lr * config.bias_lr_scale)],
                        momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay)
  rng = np.random.default_rng(0)
  images = torch.from_numpy(rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8))
  labels = torch.from_numpy(rng.integers(0, 10, batch_size))
  mean, std = torch.full((3,), 120.0), torch.full((3,), 64.0)
  pad, B = config.crop_padding, batch_size
  rows = torch.arange(32)

  def step():
    x = ((images.float() - mean) / std).permute(0, 3, 1, 2)  # NCHW view of the NHWC data: channels_last
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, B))
    flip = torch.rand(B) < 0.5
    cols = torch.where(flip[:, None], 31 - rows, rows)[:, None, :] + dx[:, None, None]
    x = padded[torch.arange(B)[:, None, None], :, (rows + dy[:, None])[:, :, None], cols]  # (B, H, W, C)
    x = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    loss = F.cross_entropy(net(x) * m.logit_scale, labels, label_smoothing=config.label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  return step, torch.__version__


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--batch_size", type=int, default=512)
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  if args.smoke:
    args.rounds, args.steps, args.batch_size = 1, 1, 8
  config = cnn_cifar.get_config()
  config.batch_size = args.batch_size
  task, train, step_args, train_flops, _ = build(config, 2 * args.batch_size, test_flops=False)
  state = [task.state]

  def fnets_run():
    state[0], metrics = train(state[0], *step_args)
    return metrics

  runs = {"fnets": fnets_run}
  try:
    runs["torch"], torch_version = torch_step(config, args.batch_size)
  except ImportError:
    torch_version = "not installed (pip install torch==2.13.0): fnets' step alone"
  times = interleaved(runs, args.rounds, args.steps)
  print(f"cnn_cifar train step, batch {args.batch_size}, {args.rounds} rounds of {args.steps} steps; jax "
        f"{jax.__version__}, torch {torch_version}; {train_flops / 1e6:.0f} MFLOP per training image (XLA's count)")
  for name, ts in times.items():
    t = float(np.median(ts))
    print(f"  {name:<6} {t * 1e3:6.0f} ms/step  {args.batch_size / t:5.0f} images/s  "
          f"{train_flops * args.batch_size / t / 1e9:4.0f} GFLOP/s   rounds: {', '.join(f'{x * 1e3:.0f}' for x in ts)}")
  if "torch" in times:
    ratios = np.array(times["torch"]) / np.array(times["fnets"])
    print(f"  fnets speed / torch speed: {np.median(ratios):.2f}x (median of per-round ratios; "
          f"range {ratios.min():.2f}-{ratios.max():.2f}; torch 2 threads, channels_last)")


if __name__ == "__main__":
  main()
