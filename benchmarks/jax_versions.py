"""fnets' steps on two installs side by side (say the oldest and the newest supported jax): the cnn_cifar train step
with and without fnets' XLA:CPU convolution flag, the LSTM LM train step (small and large) and the LSTM's time per
step as T grows with a small carry (fused and scan paths: jax#40101 made some scans quadratic in T).

  python benchmarks/jax_versions.py --python=OLD/bin/python --python=NEW/bin/python [--rounds=2]
  python benchmarks/jax_versions.py --python=... --smoke     # tiny sizes, flag on only, 1 round: seconds

Each (interpreter, flag) runs in its own process (XLA reads its flags once, at the backend's start), and the
processes take turns, round after round, so that the machine's drift hits every one alike. Ratios are of the
medians, and the median of the per-round ratios. Each child prints one JSON line of ms per step.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
CHILD = r"""
import json, os, sys, time
flag_on, smoke = sys.argv[1] == "on", sys.argv[2] == "1"
os.environ["XLA_FLAGS"] = __FLAG__ if flag_on else ""
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")
import jax
jax.devices()  # the backend starts now, with XLA_FLAGS as set above (fnets' own setting comes too late to apply)
import fnets, jax.numpy as jnp, numpy as np
sys.path.insert(0, __BENCHMARKS__)
import cnn_cifar_recipe, lstm_speed
from fnets.experiments import cnn_cifar
from fnets.models import lstm

def ms(run, steps):
  jax.block_until_ready(run()); jax.block_until_ready(run())
  t = time.perf_counter()
  for _ in range(steps):
    out = run()
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / steps * 1e3

out = {"jax": jax.__version__, "python": sys.version.split()[0], "flag": flag_on}
config = cnn_cifar.get_config()
config.batch_size = 16 if smoke else 512
if smoke:  # one small conv layer: the script's own check, in seconds
  config.model.conv_features, config.model.pool_after = (8,), (0,)
task, train, args, _, _ = cnn_cifar_recipe.build(config, 64 if smoke else 2048, test_flops=False)
state = [task.state]

def cnn_step():  # the step donates its state: carry it on
  state[0], metrics = train(state[0], *args)
  return metrics

out["cnn_cifar b%d" % config.batch_size] = ms(cnn_step, 1 if smoke else 3)
if flag_on:
  sizes = {"LSTM LM small (B32 T64 E64 H128)": (32, 64, 64, 128),
           "LSTM LM large (B64 T128 E128 H512)": (64, 128, 128, 512)}
  for name, (B, T, E, H) in list(sizes.items())[:1 if smoke else 2]:
    if smoke:
      B, T, E, H = 2, 4, 4, 8
    run = lstm_speed.jax_step_fn(lstm_speed.FnetsLSTMLM(E, H), B, T)[0]
    out[name] = ms(lambda: run() or jnp.zeros(()), 2 if smoke else 10)
  B, D, H = 16, 16, 64  # a small carry
  params = lstm.init(jax.random.key(0), D, H)
  for impl in ("fused", "scan"):
    grad = jax.jit(jax.grad(lambda p, x: lstm.apply(p, x, impl=impl)[0].sum()))
    for T in ((4,) if smoke else (64, 512, 2048)):
      x = jax.random.normal(jax.random.key(1), (B, T, D))
      out[f"LSTM grad B16 H64 {impl}, T={T}: us per time step"] = ms(lambda: grad(params, x), 2 if smoke else 5) * 1e3 / T
print("RESULT " + json.dumps(out))
"""


def child(python: str, flag: str, smoke: bool) -> dict:
  code = CHILD.replace("__FLAG__", repr(FLAG)).replace("__BENCHMARKS__", repr(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run([python, "-c", code, flag, "1" if smoke else "0"], capture_output=True, text=True,
                        env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})
  lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  if proc.returncode or not lines:
    sys.exit(f"{python} (flag {flag}) failed:\n{proc.stderr[-3000:]}")
  return json.loads(lines[0][len("RESULT "):])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--python", action="append", required=True, help="an interpreter with fnets installed")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  rounds = 1 if args.smoke else args.rounds
  runs = [(python, flag) for python in args.python for flag in (("on",) if args.smoke else ("on", "off"))]
  results = {run: [] for run in runs}
  for r in range(rounds):
    for run in runs:
      results[run].append(child(*run, args.smoke))
      print(f"round {r + 1}: {results[run][-1]}", flush=True)
  label = lambda run: f"jax {results[run][0]['jax']} (Python {results[run][0]['python']}), flag {run[1]}"
  figures = sorted({k for run in runs for k in results[run][0] if k not in ("jax", "python", "flag")})
  print(f"\n{os.cpu_count()} CPUs; ms per step (LSTM grad: µs per time step), median of {rounds} round(s):")
  for figure in figures:
    print(f"  {figure}")
    have = [run for run in runs if figure in results[run][0]]
    for run in have:
      values = [res[figure] for res in results[run]]
      print(f"    {label(run):<48} {statistics.median(values):10.2f}   ({', '.join(f'{v:.2f}' for v in values)})")
    if len(have) > 1:
      base = have[0]
      for run in have[1:]:
        ratio = statistics.median(a[figure] / b[figure] for a, b in zip(results[run], results[base]))
        print(f"    time of {label(run)} / {label(base)}: {ratio:.2f}x (median of per-round ratios)")


if __name__ == "__main__":
  main()
