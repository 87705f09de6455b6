"""cnn_cifar's train step as it is against variants of it, interleaved in one process: with Flax's `nn.max_pool`
(whose gradient XLA:CPU runs as a scatter) instead of fnets' `layers.max_pool`, and computing in bfloat16
(`--config.dtype=bfloat16`). Checks that the Flax-pool step gives bit for bit the same weights and metrics.

  python benchmarks/cnn_cifar_step_variants.py [--rounds=5] [--steps=2] [--batch_size=512]
"""

import argparse
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import fnets  # noqa: F401  (XLA flags before JAX starts)
import flax.linen as nn
import jax
import numpy as np

from cnn_cifar_recipe import build, interleaved, stepping
from experiments import cnn_cifar
from fnets.models import cnn


@contextlib.contextmanager
def flax_max_pool():
  """The CNN built with Flax's max_pool while inside (for any tracing of the step)."""
  fnets_pool = cnn.max_pool
  cnn.max_pool = lambda x, window: nn.max_pool(x, (window, window), (window, window))
  try:
    yield
  finally:
    cnn.max_pool = fnets_pool


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--batch_size", type=int, default=512)
  args = parser.parse_args()
  config = cnn_cifar.get_config()
  steps = {"fnets": build(config, args.batch_size)}
  with flax_max_pool():
    step, *rest = build(config, args.batch_size)

  def flax_step(*step_args, step=step):
    with flax_max_pool():  # (should jit trace the step again)
      return step(*step_args)

  steps["flax max_pool"] = (flax_step, *rest)
  bf16 = cnn_cifar.get_config()
  bf16.dtype = "bfloat16"
  steps["bfloat16"] = build(bf16, args.batch_size)
  runs, results = {}, {}
  for name, (step, state, step_args, _, _) in steps.items():  # compile, warm up
    for _ in range(2):
      state, metrics = step(state, *step_args)
    results[name] = jax.device_get((state.params, metrics))
    runs[name] = stepping(step, state, step_args)
  same = all(np.array_equal(a, b) for a, b in zip(*(jax.tree.leaves(results[k]) for k in ("fnets", "flax max_pool"))))
  times = interleaved(runs, args.rounds, args.steps)
  print(f"cnn_cifar train step, batch {args.batch_size}, {args.rounds} interleaved rounds of {args.steps} steps; "
        f"jax {jax.__version__}")
  print(f"  after 2 steps, the flax-max_pool step's weights and metrics equal fnets' bit for bit: {same}")
  for name, ts in times.items():
    ratio = np.median(np.array(ts) / np.array(times["fnets"]))
    print(f"  {name:<14} {np.median(ts) * 1e3:6.0f} ms/step   its time / fnets': {ratio:.2f}x (median of per-round "
          f"ratios)   rounds: {', '.join(f'{t * 1e3:.0f}' for t in ts)}")


if __name__ == "__main__":
  main()
