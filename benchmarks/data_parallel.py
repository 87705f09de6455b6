"""Train steps/s of cnn_mnist and of a small char LSTM on 1 device against 8 forced CPU devices, same global batch.

  python benchmarks/data_parallel.py               # 1 vs 8 devices, cnn_mnist (batch 128) and LSTM (batch 64)
  python benchmarks/data_parallel.py --steps=20

Each device count runs in a fresh process (XLA_FLAGS=--xla_force_host_platform_device_count=N must be set before
JAX starts), with the shardings fnets' trainers use (fnets/parallel.py): params replicated, batch split over the
"data" axis. On a CPU the 8 "devices" share the same cores, so this measures the cost of splitting the step
(per-device work, collectives), not a speed-up; the ratio is reported, there is no target.
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(model_name: str, steps: int) -> dict:
  sys.path.insert(0, ROOT)
  import fnets  # noqa: F401  (XLA flags before JAX starts)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from experiments import cnn_mnist, lstm_shakespeare
  from fnets import models, optim, parallel, train, train_lm

  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  if model_name == "cnn_mnist":
    config = cnn_mnist.get_config()
    model = models.create(config.model, num_classes=10)
    x = rng.integers(0, 255, (config.batch_size, 28, 28, 1), dtype=np.uint8)
    batch = (x, rng.integers(0, 10, config.batch_size).astype(np.int32))
    lr = optim.schedule(config, 1000, 100)
    tx = optim.optimizer(config, lr)
    variables = model.init(jax.random.key(0), x[:1], train=False)
    state = train.TrainState(jnp.zeros((), jnp.int32), variables["params"], tx.init(variables["params"]),
                             variables["batch_stats"])
    step = functools.partial(train.train_step, model=model, tx=tx, lr_schedule=lr, config=config,
                             mean_C=np.full(1, 33.0, np.float32), std_C=np.full(1, 78.0, np.float32))
  else:
    config = lstm_shakespeare.get_config()
    config.model.hidden_size = 256
    model = models.create(config.model, vocab_size=65)
    batch = (rng.integers(0, 65, (config.batch_size, config.seq_len + 1)).astype(np.int32),)
    lr = optim.schedule(config, 1000, 1)
    tx = optim.optimizer(config, lr)
    params = model.init(jax.random.key(0), batch[0][:1, :-1])["params"]
    state = train.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), {})
    step = functools.partial(train_lm.train_step, model=model, tx=tx, lr_schedule=lr)

  replicated, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  state = jax.device_put(state, replicated)
  jitted = jax.jit(step, in_shardings=(replicated, *[split] * len(batch), replicated),
                   out_shardings=(replicated, replicated), donate_argnums=0)
  batch = [parallel.to_global(a, split) for a in batch]
  key = jax.device_put(jax.random.key(0), replicated)
  start = time.perf_counter()
  state, metrics = jitted(state, *batch, key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = jitted(state, *batch, key)
  jax.block_until_ready(metrics)
  return {"devices": jax.device_count(), "steps_per_s": steps / (time.perf_counter() - start),
          "first_step_s": compile_s, "global_batch": int(batch[0].shape[0])}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--models", default="cnn_mnist,lstm")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.child, args.steps)))
    return
  for model_name in args.models.split(","):
    results = {}
    for devices in (1, 8):
      env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
      out = subprocess.run([sys.executable, __file__, f"--child={model_name}", f"--steps={args.steps}"], env=env,
                           capture_output=True, text=True, check=True)
      results[devices] = json.loads(out.stdout.strip().splitlines()[-1])
      r = results[devices]
      print(f"{model_name:10s} {devices} device(s), global batch {r['global_batch']}: {r['steps_per_s']:.2f} steps/s "
            f"(first step incl. compile {r['first_step_s']:.1f} s)", flush=True)
    print(f"{model_name:10s} 8 devices / 1 device: {results[8]['steps_per_s'] / results[1]['steps_per_s']:.2f}x")


if __name__ == "__main__":
  main()
