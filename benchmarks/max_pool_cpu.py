"""Why fnets differentiates max pooling with its own rule (`fnets.models.layers.max_pool`): forward and
forward + backward of 2×2 max pooling at cnn_cifar's three pooling sizes (batch 512), Flax's `nn.max_pool`
(whose gradient XLA lowers to a select-and-scatter, a scatter on CPU) against fnets', interleaved, medians.
It also checks that the two give the same gradient, bit for bit.

  python benchmarks/max_pool_cpu.py [--rounds=7] [--batch_size=512]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import fnets  # noqa: F401  (XLA flags before JAX starts)
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fnets.models import layers

SHAPES = ((31, 64), (15, 256), (7, 256))  # (pixels, channels) at cnn_cifar's pools


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--batch_size", type=int, default=512)
  args = parser.parse_args()
  pools = {"flax": lambda x: nn.max_pool(x, (2, 2), (2, 2)), "fnets": lambda x: layers.max_pool(x, 2)}
  print(f"2x2 max pooling, batch {args.batch_size}, {args.rounds} interleaved rounds, medians; jax {jax.__version__}")
  for H, C in SHAPES:
    x = jax.random.normal(jax.random.key(0), (args.batch_size, H, H, C))
    fns = {}
    for name, pool in pools.items():
      loss = lambda x, pool=pool: jnp.sum(jnp.sin(pool(x)))  # (sin: a gradient that differs per pixel)
      fns[name, "forward"], fns[name, "forward+backward"] = jax.jit(loss), jax.jit(jax.grad(loss))
    grads = {name: np.asarray(fns[name, "forward+backward"](x)) for name in pools}
    same = np.array_equal(grads["flax"], grads["fnets"])
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
      for k, f in fns.items():
        t = time.perf_counter()
        jax.block_until_ready(f(x))
        times[k].append(time.perf_counter() - t)
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    print(f"  {args.batch_size}x{H}x{H}x{C}: forward flax {ms['flax', 'forward']:.0f} ms, fnets "
          f"{ms['fnets', 'forward']:.0f} ms; forward+backward flax {ms['flax', 'forward+backward']:.0f} ms, fnets "
          f"{ms['fnets', 'forward+backward']:.0f} ms ({ms['flax', 'forward+backward'] / ms['fnets', 'forward+backward']:.2f}x);"
          f" gradients identical: {same}")


if __name__ == "__main__":
  main()
