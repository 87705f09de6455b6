"""Time to accuracy of a finished `cnn_cifar` run, in airbench's terms: total training PFLOP, achieved GFLOP/s,
time per epoch, and the test accuracy of the final model.

  TFDS_DATA_DIR=../shared/tfds python launch.py --experiment=cnn_cifar --workdir=/tmp/runs/cnn_cifar_s0
  python benchmarks/cnn_cifar_time_to_accuracy.py --workdir=/tmp/runs/cnn_cifar_s0 [--wall=43:54]

FLOPs are XLA's cost analysis of the run's own compiled train step (forward, backward, update) and eval step
(every TTA view), at the run's config (WORKDIR/config.json). Training time is what the run's train records
measured (each record: its steps × batch / its examples/s; evaluation and start-up not included); `--wall` (the
whole command's wall time, e.g. from `/usr/bin/time`) adds the overhead beside it.
"""

import argparse
import collections
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # cnn_cifar_recipe
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import fnets  # noqa: F401  (XLA flags before JAX starts)
import ml_collections

from cnn_cifar_recipe import build

TEST_IMAGES = 10_000


def train_seconds(records: list[dict], batch_size: int) -> dict[int, float]:
  """{epoch: seconds of training} from the train records (each covers the steps since the one before; a record
  that straddles two epochs counts in the one it ends in)."""
  per_epoch, last_step = collections.defaultdict(float), 0
  for r in records:
    if r["split"] == "train":
      seconds = (r["step"] - last_step) * batch_size / r["examples_per_sec"]
      per_epoch[math.ceil(r["epoch"]) - 1] += seconds
      last_step = r["step"]
  return dict(per_epoch)


def minutes(text: str) -> float:
  parts = [float(p) for p in text.split(":")]
  return sum(p * 60 ** i for i, p in enumerate(reversed(parts))) / 60


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a finished cnn_cifar run")
  parser.add_argument("--wall", default="", help="the run's whole wall time, [h:]mm:ss")
  args = parser.parse_args()
  with open(os.path.join(args.workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  test = [r for r in records if r["split"] == "test"]
  if not test:
    sys.exit(f"{args.workdir} has no test record: the run did not finish; resume it first")
  _, _, _, train_flops, test_flops = build(config, config.batch_size)
  seconds = train_seconds(records, config.batch_size)
  total_s = sum(seconds.values())
  steps = max(r["step"] for r in records)
  train_pflop = train_flops * steps * config.batch_size / 1e15
  print(f"{args.workdir}: {config.num_epochs} epochs, batch {config.batch_size}, {steps} steps, TTA {config.tta}")
  print(f"  training: {train_flops / 1e6:.0f} MFLOP per image, {train_pflop:.3f} PFLOP in all; "
        f"test: {test_flops / 1e6:.0f} MFLOP per image ({test_flops * TEST_IMAGES / 1e12:.1f} TFLOP)")
  print(f"  time per epoch (training only): " + ", ".join(f"{s / 60:.1f}" for _, s in sorted(seconds.items()))
        + " min")
  print(f"  training time {total_s / 60:.1f} min at {train_pflop * 1e6 / total_s:.0f} GFLOP/s"
        + (f"; whole command {minutes(args.wall):.1f} min (start-up, evaluation: "
           f"{minutes(args.wall) - total_s / 60:.1f} min)" if args.wall else ""))
  print(f"  test accuracy (final model): {test[-1]['accuracy']:.2%}, loss {test[-1]['loss']:.4f}")


if __name__ == "__main__":
  main()
