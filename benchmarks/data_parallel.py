"""Train steps/s of cnn_mnist and of a small char LSTM on 1 device against 8 forced CPU devices, same global batch.

  python benchmarks/data_parallel.py               # 1 vs 8 devices, cnn_mnist (batch 128) and LSTM (batch 64)
  python benchmarks/data_parallel.py --steps=20 [--models=cnn_mnist,lstm]
  python benchmarks/data_parallel.py --smoke       # tiny models and batches, 2 steps: seconds

Each device count runs in a fresh process on the CPU (JAX_PLATFORMS=cpu; XLA_FLAGS=
--xla_force_host_platform_device_count=N must be set before JAX starts). The step is the real one: `Task.train_step` of the task's `setup` (fnets/tasks/), on random images or
text, with the shardings the trainers use (fnets/parallel.py): params replicated, batch split over the "data" axis.
On a CPU the 8 "devices" share the same cores, so this measures the cost of splitting the step (per-device work,
collectives), not a speed-up; the ratio is reported, there is no target.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tiny_shakespeare's 65


def measure(model_name: str, steps: int, smoke: bool) -> dict:
  sys.path.insert(0, ROOT)
  import fnets  # noqa: F401  (XLA flags before JAX starts)
  import jax
  import numpy as np
  from fnets.data import images
  from fnets.experiments import cnn_mnist, lstm_shakespeare
  from fnets.tasks import char_lm, classify

  rng = np.random.default_rng(0)
  if model_name == "cnn_mnist":
    config = cnn_mnist.get_config()
    if smoke:
      config.batch_size, config.model.conv_features, config.model.pool_after = 16, (8,), (0,)
      config.model.dense_features = (16,)
    n = 4 * config.batch_size
    split = images.ImageSplit(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                              rng.integers(0, 10, n, dtype=np.int32))
    task = classify.setup(config, data=images.in_memory("random", split, split, 10))
  else:
    config = lstm_shakespeare.get_config()
    config.model.hidden_size = 256
    if smoke:
      config.batch_size, config.seq_len, config.model.embed_dim, config.model.hidden_size = 8, 16, 8, 16
    text = lambda n: "".join(rng.choice(list(CHARS), n))
    task = char_lm.setup(config, texts={"train": text(4 * (config.batch_size + 1) * config.seq_len),
                                        "validation": text(1000), "test": text(1000)})
  state = task.state
  start = time.perf_counter()
  state, metrics = task.train_step(state, 0)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for step in range(1, steps + 1):
    state, metrics = task.train_step(state, step)
  jax.block_until_ready(metrics)
  return {"model": model_name, "steps_per_s": steps / (time.perf_counter() - start), "first_step_s": compile_s,
          "global_batch": config.batch_size}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--models", default="cnn_mnist,lstm")
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  steps = 2 if args.smoke else args.steps
  if args.child:
    for model_name in args.models.split(","):
      print(json.dumps(measure(model_name, steps, args.smoke)), flush=True)
    return
  results = {}
  for devices in (1, 8):  # one process per device count, all models in it
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, __file__, "--child", f"--models={args.models}", f"--steps={steps}",
                          *(["--smoke"] if args.smoke else [])], env=env, capture_output=True, text=True)
    if out.returncode:
      sys.exit(f"{devices} device(s) failed:\n{out.stderr[-3000:]}")
    for r in (json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")):
      results[r["model"], devices] = r
      print(f"{r['model']:10s} {devices} device(s), global batch {r['global_batch']}: {r['steps_per_s']:.2f} "
            f"steps/s (first step incl. compile {r['first_step_s']:.1f} s)", flush=True)
  for model_name in args.models.split(","):
    ratio = results[model_name, 8]["steps_per_s"] / results[model_name, 1]["steps_per_s"]
    print(f"{model_name:10s} 8 devices / 1 device: {ratio:.2f}x")


if __name__ == "__main__":
  main()
