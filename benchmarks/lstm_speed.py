"""Training-step speed of the fnets LSTM against flax.linen's nn.RNN(nn.OptimizedLSTMCell) and torch.nn.LSTM.

  python benchmarks/lstm_speed.py            # large (B=64, T=128, E=128, H=512) and small sizes
  python benchmarks/lstm_speed.py --quick    # fewer repetitions
  python benchmarks/lstm_speed.py --rounds 30  # steadier medians on a machine whose speed drifts
  python benchmarks/lstm_speed.py --smoke    # one tiny size, fewer candidates, 1 round of 1 step: seconds

One step = forward + backward + Adam update of Embed → LSTM → Dense (vocab 65) on random tokens; tokens/s is
B·T / step time (median of several timed runs; the candidates of one size are timed in turn, A, B, C, A, B, C, ...,
so that they see the same load). The ratios are given twice: of the medians, and the median of the ratios within
each round (less affected by the machine's drift). Torch is measured only where it is installed (it is no
dependency of fnets: `pip install torch==2.13.0`), with 2 threads. Also prints the size of each JAX step's
temporaries (XLA:CPU maps them fresh on every call, so on a machine with slow page faults they cost time), the
compile time and step of the fused path against the reference path (`impl="scan"`, `lax.scan` over the cell
equations) and the reference fully unrolled, and the effect of scan `unroll`.
"""

import argparse
import os
import statistics
import time

# Compile times are measured, so JAX's persistent compilation cache (on by default in fnets) is off here.
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")

import fnets  # noqa: F401  (XLA flags before JAX starts)
import flax.linen as nn
import jax
import optax

from fnets.models.sequence import LSTM

V = 65


class FlaxLSTMLM(nn.Module):
  E: int
  H: int

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(V, self.E)(tokens)
    y = nn.RNN(nn.OptimizedLSTMCell(self.H))(x)
    return nn.Dense(V)(y)


class FnetsLSTMLM(nn.Module):
  E: int
  H: int
  unroll: int = 1
  impl: str = "fused"  # "scan": the reference path (`lax.scan` over lstm.cell)

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(V, self.E)(tokens)
    y, _ = LSTM(self.H, unroll=self.unroll, impl=self.impl)(x)
    return nn.Dense(V)(y)


def jax_step_fn(model, B, T):
  tokens = jax.random.randint(jax.random.key(0), (B, T + 1), 0, V)
  params = model.init(jax.random.key(1), tokens[:, :-1])["params"]
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, tokens):
    def loss_fn(p):
      logits = model.apply({"params": p}, tokens[:, :-1])
      return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  t0 = time.perf_counter()
  compiled = step.lower(params, opt_state, tokens).compile()
  compile_s = time.perf_counter() - t0
  state = [params, opt_state]

  def run():
    state[0], state[1], loss = compiled(state[0], state[1], tokens)
    loss.block_until_ready()
  memory = compiled.memory_analysis()  # None on backends that do not report it
  return run, compile_s, memory.temp_size_in_bytes / 2**20 if memory else float("nan")


def torch_step_fn(B, T, E, H):
  import torch
  torch.set_num_threads(2)
  torch.manual_seed(0)
  emb, rnn, head = torch.nn.Embedding(V, E), torch.nn.LSTM(E, H, batch_first=True), torch.nn.Linear(H, V)
  params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
  opt = torch.optim.Adam(params, 1e-3)
  tokens = torch.randint(0, V, (B, T + 1))

  def run():
    opt.zero_grad()
    y, _ = rnn(emb(tokens[:, :-1]))
    loss = torch.nn.functional.cross_entropy(head(y).reshape(-1, V), tokens[:, 1:].reshape(-1))
    loss.backward()
    opt.step()
  return run, 0.0, None


def time_steps(run, repeats, steps):
  return statistics.median(time_interleaved({"": run}, repeats, steps)[""])


def time_interleaved(runs: dict, repeats, steps):
  """Seconds per step of each run in each round, timed in rounds (A, B, C, A, B, C, ...) so that a change in the
  load of the machine during the measurement affects all candidates alike."""
  for run in runs.values():
    run()
    run()  # warm up
  times = {label: [] for label in runs}
  for _ in range(repeats):
    for label, run in runs.items():
      t0 = time.perf_counter()
      for _ in range(steps):
        run()
      times[label].append((time.perf_counter() - t0) / steps)
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--rounds", type=int, default=9, help="timed rounds per candidate (3 steps each)")
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  repeats, steps = (1, 1) if args.smoke else (3, 3) if args.quick else (args.rounds, 3)
  sizes = {"large": (64, 128, 128, 512), "small": (32, 64, 64, 128)}
  if args.smoke:
    sizes = {"tiny": (4, 8, 8, 16)}
  try:
    import torch  # noqa: F401
    have_torch = True
  except ImportError:
    have_torch = False
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; torch: "
        f"{torch.__version__ if have_torch else 'not installed'}; load average {os.getloadavg()[0]:.1f} "
        "(other processes on the machine make all figures lower and noisier)")

  for name, (B, T, E, H) in sizes.items():
    print(f"\n== {name}: batch {B}, seq {T}, embed {E}, hidden {H} (tokens/s, higher is better)")
    results = {}
    candidates = {"fnets (unroll 1)": lambda: jax_step_fn(FnetsLSTMLM(E, H, unroll=1), B, T),
                  "fnets (unroll 4)": lambda: jax_step_fn(FnetsLSTMLM(E, H, unroll=4), B, T),
                  "flax OptimizedLSTMCell": lambda: jax_step_fn(FlaxLSTMLM(E, H), B, T)}
    if have_torch:
      candidates["torch.nn.LSTM (2 threads)"] = lambda: torch_step_fn(B, T, E, H)
    if args.smoke:
      del candidates["fnets (unroll 4)"]
    made = {label: make() for label, make in candidates.items()}
    times = time_interleaved({label: run for label, (run, _, _) in made.items()}, repeats, steps)
    for label, (_, compile_s, temp_mb) in made.items():
      step_s = statistics.median(times[label])
      results[label] = B * T / step_s
      print(f"  {label:<27} {results[label]:>9.0f} tokens/s  {step_s * 1e3:7.1f} ms/step"
            + (f"  compile {compile_s:.1f} s  temporaries {temp_mb:.0f} MB" if compile_s else ""))
    best = max([k for k in results if k.startswith("fnets")], key=results.get)  # the better unroll of this run
    for short, other in [("flax", "flax OptimizedLSTMCell"), ("torch", "torch.nn.LSTM (2 threads)")]:
      if other in results:  # also the median of the ratios within each round (less affected by the machine's drift)
        paired = statistics.median(b / a for a, b in zip(times[best], times[other]))
        print(f"  fnets / {short:<5} = {results[best] / results[other]:.2f}x"
              f"  (median of per-round ratios {paired:.2f}x)")

  B, T, E, H = (4, 8, 8, 16) if args.smoke else (32, 32, 64, 128)
  print(f"\n== compile time, batch {B}, seq {T}, embed {E}, hidden {H}")
  models = {"fused (impl=fused)": FnetsLSTMLM(E, H), "reference (impl=scan)": FnetsLSTMLM(E, H, impl="scan"),
            "reference, unrolled": FnetsLSTMLM(E, H, unroll=T, impl="scan")}
  for label, model in list(models.items())[1:2] if args.smoke else models.items():
    run, compile_s, _ = jax_step_fn(model, B, T)
    print(f"  {label:<22} compile {compile_s:6.2f} s   step {time_steps(run, repeats, steps) * 1e3:7.2f} ms")


if __name__ == "__main__":
  main()
