"""cnn_cifar's train step (airbench94's recipe) against the previous cnn_cifar network (7 plain conv layers) at
the same batch, interleaved in one process, with XLA's FLOP count per training and per test image.

  python benchmarks/cnn_cifar_recipe.py [--rounds=3] [--steps=3] [--batch_size=512]

Random images stand in for CIFAR-10 (the step's cost does not depend on them). FLOPs are XLA's cost analysis of
the compiled step (training: forward, backward and update; test: the forward passes of the config's TTA views).
"""

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import fnets  # noqa: F401  (XLA flags before JAX starts)
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import cnn_cifar
from fnets import models, optim, train
from fnets.loop import TrainState
from fnets.models import cnn


def previous_config() -> ml_collections.ConfigDict:
  """cnn_cifar before the recipe (commit bc1edfa): 85% in 12 epochs."""
  c = cnn_cifar.get_config()
  for name in ("alternating_flip", "decay_biases"):
    c[name] = False
  c.num_epochs, c.warmup_epochs, c.validation_percent = 12, 2.4, 10
  c.crop_padding, c.tta, c.learning_rate, c.momentum, c.weight_decay = 4, "none", 0.4, 0.9, 5e-4
  c.bias_lr_scale, c.lookahead_every, c.lr_start_fraction, c.lr_end_fraction = 1.0, 0, 0.1, 0.0
  c.model = ml_collections.ConfigDict(dict(
      name="cnn", conv_features=(24, 32, 32, 128, 128, 128, 128), kernel_size=3, strides=1, padding="SAME",
      pool_after=(1, 3, 5, 6), pool="max", activation="relu", batch_norm=True, dense_features=(), dropout=0.0))
  return c


def build(config, batch_size: int):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, batch_size).astype(np.int32)
  indices = np.arange(batch_size, dtype=np.int32)
  mean_C, std_C = np.full(3, 120, np.float32), np.full(3, 64, np.float32)
  model = models.create(config.model, num_classes=10, dtype=models.compute_dtype(config.dtype))
  variables = model.init(jax.random.key(0), images[:1], train=False)
  params = variables["params"]
  if k := config.model.get("whiten_kernel", 0):
    params = {**params, cnn.WHITEN: {**params[cnn.WHITEN], "kernel": cnn.patch_whitening(
        (images - mean_C) / std_C, k)}}
  steps_per_epoch = 50_000 // batch_size
  lr = optim.schedule(config, steps_per_epoch * config.num_epochs, steps_per_epoch)
  frozen = {p: 0 for p in cnn.FROZEN_PATHS if k}
  tx = optim.optimizer(config, lr, frozen=frozen, total_steps=steps_per_epoch * config.num_epochs,
                       steps_per_epoch=steps_per_epoch)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), variables["batch_stats"])
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, lr_schedule=lr, config=config,
                                   mean_C=mean_C, std_C=std_C, steps_per_epoch=steps_per_epoch), donate_argnums=0)
  args = (images, labels, jax.random.key(1), indices)
  train_flops = step.lower(state, *args).compile().cost_analysis()["flops"] / batch_size
  evaluate = jax.jit(functools.partial(train.eval_step, model=model, mean_C=mean_C, std_C=std_C, ensemble=False,
                                       tta=config.tta))
  test_flops = evaluate.lower(state, images, labels, np.ones(batch_size, bool)).compile().cost_analysis()["flops"]
  return step, state, args, train_flops, test_flops / batch_size


def stepping(step, state, args):
  """A function of no arguments that runs `step` once on its own state (the state is donated and replaced)."""
  box = [state]

  def run():
    box[0], metrics = step(box[0], *args)
    return metrics
  return run


def interleaved(runs: dict, rounds: int, steps: int) -> dict:
  """Seconds per call of each `runs[name]()` (one call, one step), timed in rounds of `steps` calls that take
  turns, A, B, A, B, ...: the machine's drift in speed hits all alike. The callers warm them up first."""
  times = {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      t0 = time.perf_counter()
      for _ in range(steps):
        out = run()
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - t0) / steps)
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=512)
  args = parser.parse_args()
  nets, runs = {}, {}
  for name, config in (("recipe", cnn_cifar.get_config()), ("previous", previous_config())):
    step, state, step_args, train_flops, test_flops = build(config, args.batch_size)
    runs[name] = stepping(step, state, step_args)
    for _ in range(2):  # compile and warm up
      jax.block_until_ready(runs[name]())
    nets[name] = dict(train_flops=train_flops, test_flops=test_flops, epochs=config.num_epochs)
  for name, times in interleaved(runs, args.rounds, args.steps).items():
    nets[name]["times"] = times
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, batch {args.batch_size}, {args.rounds} rounds of "
        f"{args.steps} steps")
  for name, net in nets.items():
    t = float(np.median(net["times"]))
    gflops = net["train_flops"] * args.batch_size / t / 1e9
    epoch_s = t * (50_000 // args.batch_size)
    print(f"  {name:<8}: {t * 1e3:7.0f} ms/step (rounds {', '.join(f'{x * 1e3:.0f}' for x in net['times'])}), "
          f"{args.batch_size / t:5.0f} images/s; {net['train_flops'] / 1e6:5.0f} MFLOP per training image, "
          f"{net['test_flops'] / 1e6:5.0f} per test image; {gflops:4.0f} GFLOP/s; {epoch_s / 60:.1f} min/epoch, "
          f"{net['epochs']} epochs = {net['train_flops'] * 50_000 * net['epochs'] / 1e15:.3f} PFLOP, "
          f"~{epoch_s * net['epochs'] / 60:.0f} min")
  ratio = np.median(nets["recipe"]["times"]) / np.median(nets["previous"]["times"])
  print(f"  recipe / previous step time: {ratio:.2f}x")


if __name__ == "__main__":
  main()
