"""cnn_cifar's train step (airbench94's recipe) as a run builds it (`classify.setup` on random images): XLA's FLOPs
per training and per test image, and ms/step of the real step (`Task.train_step`: the input pipeline's host batch,
then the jitted step) against the jitted step on one batch already on the device, interleaved; the difference is
what the input pipeline costs. With --workdir, a finished run's time to accuracy in airbench's terms.

  python benchmarks/cnn_cifar_recipe.py [--rounds=3] [--steps=3] [--batch_size=512] [--images=50000]
  python benchmarks/cnn_cifar_recipe.py --workdir=/tmp/runs/cnn_cifar_s0 [--wall=43:54] --rounds=0
  python benchmarks/cnn_cifar_recipe.py --smoke     # tiny sizes, seconds, meaningless figures (the tests' run)

Random uint8 images stand in for CIFAR-10: the step's cost does not depend on them, and the batches are gathered
from `--images` of them as from the real data. FLOPs are XLA's cost analysis of the compiled steps (training:
forward, backward, update; test: the forward passes of the config's TTA views). With --workdir the config is the
run's (WORKDIR/config.json), and the training time is what its train records measured (each: its steps × batch /
its examples/s; evaluation and start-up not counted); --wall (the whole command's time, [h:]mm:ss) adds the rest.
--rounds=0 times nothing.
"""

import argparse
import collections
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import fnets  # noqa: F401  (XLA flags before JAX starts)
import jax
import numpy as np

from fnets import runs
from fnets.data import images
from fnets.experiments import cnn_cifar
from fnets.tasks import classify

CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000


def random_data(num_images: int, shape=(32, 32, 3), num_classes: int = 10) -> images.ImageDataset:
  rng = np.random.default_rng(0)
  split = images.ImageSplit(rng.integers(0, 256, (num_images, *shape), dtype=np.uint8),
                            rng.integers(0, num_classes, num_images, dtype=np.int32))
  return images.in_memory("random", split, None, num_classes)


def build(config, num_images: int, test_flops: bool = True):
  """(task, its compiled train step, that step's arguments on a batch already on the device, training FLOPs per
  image, test FLOPs per image or None)."""
  task = classify.setup(config, data=random_data(num_images))
  ctx, B = task.context, config.batch_size
  args = ctx["train_args"](task.state, 0)[1:]  # (step 0's batch, on the devices; the key; no swept values)
  train = ctx["train_jit"].lower(task.state, *args).compile()
  test = test_flops and ctx["eval_jit"].lower(task.state, *args[:2], np.ones(B, bool)).compile()
  return task, train, args, train.cost_analysis()["flops"] / B, test and test.cost_analysis()["flops"] / B


def interleaved(runs: dict, rounds: int, steps: int) -> dict:
  """Seconds per call of each `runs[name]()` (one call, one step), timed in rounds of `steps` calls that take
  turns, A, B, A, B, ...: the machine's drift in speed hits all alike. Each is warmed up (2 calls) first."""
  for run in [*runs.values()] * 2:
    jax.block_until_ready(run())
  times = {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      t0 = time.perf_counter()
      for _ in range(steps):
        out = run()
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - t0) / steps)
  return times


def time_to_accuracy(workdir: str, batch_size: int, train_flops: float, test_flops: float, wall: str):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  test = [r for r in records if r["split"] == "test"]
  if not test:
    sys.exit(f"{workdir} has no test record: the run did not finish; resume it first")
  per_epoch, last_step = collections.defaultdict(float), 0  # a record straddling two epochs counts in its last
  for r in records:
    if r["split"] == "train":
      per_epoch[math.ceil(r["epoch"]) - 1] += (r["step"] - last_step) * batch_size / r["examples_per_sec"]
      last_step = r["step"]
  total_s, steps = sum(per_epoch.values()), max(r["step"] for r in records)
  pflop = train_flops * steps * batch_size / 1e15
  wall_min = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":")))) / 60 if wall else 0
  print(f"{workdir}: {steps} steps of {batch_size}; training {pflop:.3f} PFLOP, test "
        f"{test_flops * CIFAR_TEST / 1e12:.1f} TFLOP")
  print("  time per epoch (training only): " + ", ".join(f"{s / 60:.1f}" for _, s in sorted(per_epoch.items()))
        + f" min; training {total_s / 60:.1f} min at {pflop * 1e6 / total_s:.0f} GFLOP/s"
        + (f"; whole command {wall_min:.1f} min" if wall else ""))
  print(f"  test accuracy (final model): {test[-1]['accuracy']:.2%}, loss {test[-1]['loss']:.4f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=0, help="default: the config's (512)")
  parser.add_argument("--images", type=int, default=CIFAR_TRAIN, help="random training images")
  parser.add_argument("--workdir", default="", help="a finished cnn_cifar run: its config and time to accuracy")
  parser.add_argument("--wall", default="", help="with --workdir: the run's whole wall time, [h:]mm:ss")
  parser.add_argument("--smoke", action="store_true", help="batch 8 of 32 images, 1 round of 1 step")
  args = parser.parse_args()
  if args.smoke:
    args.rounds, args.steps, args.batch_size, args.images = min(args.rounds, 1), 1, args.batch_size or 8, 32
  config = runs.recorded_config(args.workdir) if args.workdir else cnn_cifar.get_config()
  run_batch = config.batch_size
  config.batch_size = B = args.batch_size or config.batch_size
  task, train, step_args, train_flops, test_flops = build(config, max(args.images, 2 * B))
  print(f"cnn_cifar train step, batch {B}; jax {jax.__version__}, {jax.devices()[0].device_kind}")
  print(f"  XLA's count: {train_flops / 1e6:.0f} MFLOP per training image, {test_flops / 1e6:.0f} per test image "
        f"(TTA {config.tta}); {config.num_epochs} epochs of {CIFAR_TRAIN:,} images: "
        f"{train_flops * (CIFAR_TRAIN // B) * B * config.num_epochs / 1e15:.3f} PFLOP")
  if args.workdir:
    time_to_accuracy(args.workdir, run_batch, train_flops, test_flops, args.wall)
  if not args.rounds:
    return
  state, step = [task.state], [0]

  def real():  # what the loop runs: the host batch of `step`, then the jitted step
    state[0], metrics = task.train_step(state[0], step[0])
    step[0] += 1
    return metrics

  def on_device():
    state[0], metrics = train(state[0], *step_args)
    return metrics

  times = interleaved({"real step": real, "batch on device": on_device}, args.rounds, args.steps)
  print(f"  {args.rounds} interleaved rounds of {args.steps} steps:")
  for name, ts in times.items():
    t = float(np.median(ts))
    print(f"  {name:<16} {t * 1e3:7.0f} ms/step  {B / t:5.0f} images/s  {train_flops * B / t / 1e9:4.0f} GFLOP/s  "
          f"{t * (CIFAR_TRAIN // B) / 60:.1f} min/epoch   rounds: {', '.join(f'{x * 1e3:.0f}' for x in ts)}")
  ratio = np.median(np.array(times["batch on device"]) / np.array(times["real step"]))
  print(f"  input pipeline cost: {100 * (1 - ratio):.1f}% of the real step (median of per-round ratios)")


if __name__ == "__main__":
  main()
