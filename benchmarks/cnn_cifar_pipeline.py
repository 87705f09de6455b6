"""What the input pipeline costs cnn_cifar: train steps/s fed by the real pipeline (shuffled host batches of the
in-memory uint8 CIFAR-10, augmented in the step) against the same step on one batch already on device.

  TFDS_DATA_DIR=../shared/tfds python benchmarks/cnn_cifar_pipeline.py [--steps=15]

Pipeline cost = 1 - (steps/s with pipeline) / (steps/s on device); the target is <= 5%.
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

from experiments import cnn_cifar
from fnets import models, optim, train
from fnets.data import images


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=15)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args()
  config = cnn_cifar.get_config()
  data = images.load(config.dataset, args.data_dir)
  model = models.create(config.model, num_classes=data.num_classes)
  variables = model.init(jax.random.key(0), data.train.images_NHWC[:1], train=False)
  lr = optim.schedule(config, 1000, 97)
  tx = optim.optimizer(config, lr)
  state = train.TrainState(jnp.zeros((), jnp.int32), variables["params"], tx.init(variables["params"]),
                           variables["batch_stats"])
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, lr_schedule=lr, config=config,
                                   mean_C=data.mean_C, std_C=data.std_C, key=jax.random.key(1)), donate_argnums=0)

  def timed(batches):
    nonlocal state
    for _ in range(3):  # compile and warm up
      state, metrics = step(state, *next(batches))
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = step(state, *next(batches))
    jax.block_until_ready(metrics)
    return args.steps / (time.perf_counter() - t0)

  def pipeline():
    epoch = 0
    while True:
      yield from images.train_batches(data.train, config.batch_size, config.seed, epoch)
      epoch += 1

  def on_device():
    batch = jax.device_put(next(images.train_batches(data.train, config.batch_size, 0, 0)))
    while True:
      yield batch

  # Interleave the two to even out drift of the machine's speed.
  rates = {"pipeline": [], "on_device": []}
  for _ in range(2):
    rates["on_device"].append(timed(on_device()))
    rates["pipeline"].append(timed(pipeline()))
  fed, ideal = max(rates["pipeline"]), max(rates["on_device"])
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; cnn_cifar batch {config.batch_size}, "
        f"{args.steps} steps x 2 runs each")
  print(f"  real input pipeline : {fed:.3f} steps/s  ({fed * config.batch_size:.0f} images/s)")
  print(f"  one batch on device : {ideal:.3f} steps/s  ({ideal * config.batch_size:.0f} images/s)")
  print(f"  pipeline cost       : {100 * (1 - fed / ideal):.1f}%  (target <= 5%)")


if __name__ == "__main__":
  main()
