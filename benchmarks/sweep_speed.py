"""Sweeps (`config.sweep`): K members trained together as one vmapped step against the same K single runs one
after another in fnets (and, for the char LM, in PyTorch where it is installed); and each sweep's memory against a
single run's.

  python benchmarks/sweep_speed.py                  # LM (fused LSTM) + lstm_mnist, mlp_mnist, cnn_mnist; 5 rounds
  python benchmarks/sweep_speed.py --rounds=3 --steps=5 [--members=8] [--models=lm,lstm_mnist,mlp_mnist,cnn_mnist]
  python benchmarks/sweep_speed.py --models=lm --lm_impls=fused,scan   # the LM sweep with both LSTM paths
  python benchmarks/sweep_speed.py --smoke          # LM and MLP, 2 members, tiny sizes, 1 round of 2 steps

Part 1, the char LM: lstm_shakespeare at batch 32, seq 64, embed 64, hidden 128 (its other fields as they are:
dropout 0.25, Adam, gradient clipping 1.0, warmup-cosine), on random text. The sweep is `--config.sweep.seed=(0..K-1)`;
the sequential reference is the K configs a sweep's members stand for (`sweeps.point_config`), each its own task
with its own compiled step, run one after another. PyTorch (2 threads, no dependency of fnets: `pip install
torch==2.13.0`): nn.Embedding → nn.LSTM (batch_first) → dropout → nn.Linear, Adam, the same gradient clipping,
truncated BPTT over the same windows (`text.stream_windows`) carrying the detached state, K models one after
another. On a loaded machine torch's OpenMP threads, which spin while they wait, can make its steps 100× slower;
`--torch_passive` (OMP_WAIT_POLICY=PASSIVE) makes them sleep instead. Part 2: lstm_mnist, mlp_mnist and
cnn_mnist at their configs' sizes on random MNIST-shaped data (28×28×1 uint8, 10 classes), the same comparison
without torch.

Every step is the real one, `Task.train_step` of the task's `setup` (host batch included); compile time is left
out (every task takes two steps first). One round times `--steps` steps of the sweep, then `--steps` steps of each
single run in turn, then of each torch model; the rounds repeat so that the machine's drift affects all alike.
Throughput: members × items per step × steps / seconds (items: characters, batch × seq, or examples). Ratios: of
the medians, and in brackets the median of the per-round ratios.

Memory: XLA's figure for each compiled step (`Compiled.memory_analysis()`: arguments + outputs − donated
(aliased) + temporaries, the bytes the step holds while it runs), the sweep's against a single run's; with `--rss`,
also the peak resident set of a fresh process that sets the task up and trains a few steps (/proc's VmHWM, reset
after the imports; Python, JAX and the libraries included), and how far it rose above the RSS after the imports.
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

# Compiling is not timed, and a cached executable would be the same program: the cache stays off, as elsewhere here.
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

import fnets  # noqa: E402,F401  (XLA flags before JAX starts)
import jax  # noqa: E402
import numpy as np  # noqa: E402

from fnets import config as config_lib  # noqa: E402
from fnets import sweeps  # noqa: E402
from fnets.data import images, text as text_data  # noqa: E402
from fnets.experiments import cnn_mnist, lstm_mnist, lstm_shakespeare, mlp_mnist  # noqa: E402
from fnets.tasks import char_lm, classify  # noqa: E402

CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tiny_shakespeare's 65
IMAGE_MODELS = {"lstm_mnist": lstm_mnist, "mlp_mnist": mlp_mnist, "cnn_mnist": cnn_mnist}
TARGETS = {("lm", "sequential"): 2.0, ("lm", "torch"): 1.3}  # issue 23's, for the fused LM sweep


# --- Configs and data.

def lm_config(smoke: bool, impl: str):
  size = (["--config.batch_size=4", "--config.seq_len=8", "--config.model.embed_dim=8",
           "--config.model.hidden_size=16"] if smoke else
          ["--config.batch_size=32", "--config.seq_len=64", "--config.model.embed_dim=64",
           "--config.model.hidden_size=128"])
  return config_lib.override(lstm_shakespeare.get_config(), [*size, f"--config.model.impl={impl}"])


def image_config(name: str, smoke: bool):
  config = IMAGE_MODELS[name].get_config()
  if smoke:
    config.batch_size = 16
    if name == "cnn_mnist":
      config.model.conv_features, config.model.pool_after, config.model.dense_features = (4, 8), (1,), (16,)
    elif name == "mlp_mnist":
      config.model.hidden_features = (32,)
    else:
      config.model.hidden_size = 16
  return config


def random_texts(num_chars: int) -> dict:
  rng = np.random.default_rng(0)
  text = lambda n: "".join(rng.choice(list(CHARS), n))
  return {"train": text(num_chars), "validation": text(2000), "test": text(2000)}


@functools.lru_cache(maxsize=2)
def random_images(num_images: int) -> images.ImageDataset:
  rng = np.random.default_rng(0)
  split = images.ImageSplit(rng.integers(0, 256, (num_images, 28, 28, 1), dtype=np.uint8),
                            rng.integers(0, 10, num_images, dtype=np.int32))
  return images.in_memory("random", split, None, 10)


def swept(config, members: int):
  return config_lib.override(config, [f"--config.sweep.seed=({','.join(map(str, range(members)))},)"])


def setup(model: str, config, smoke: bool):
  """The task of `config` (a single run or a sweep) on random data."""
  if model == "lm":
    # 40 windows per stream and epoch (the data order is a new draw each epoch; the cost is the same).
    return char_lm.setup(config, texts=random_texts((config.batch_size + 1) * config.seq_len * 40))
  return classify.setup(config, data=random_images(256 if smoke else 2048))


def items_per_step(model: str, config) -> int:
  return config.batch_size * (config.seq_len if model == "lm" else 1)


# --- Runners: each call trains `steps` steps and waits for them.

class Runner:
  """A task's state and step counter: `run(steps)` trains on and waits for the result."""

  def __init__(self, task):
    self.task, self.state, self.step = task, task.state, 0

  def run(self, steps: int):
    for _ in range(steps):
      self.state, metrics = self.task.train_step(self.state, self.step)
      self.step += 1
    jax.block_until_ready((self.state, metrics))


def torch_runners(config, members: int, texts: dict):
  """`members` PyTorch models of the LM, each a callable training `steps` steps, or None without torch."""
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(2)
  vocab = text_data.Vocab.from_text(texts["train"])
  ids, V = vocab.encode(texts["train"]), len(vocab.chars)
  B, T, E, H = config.batch_size, config.seq_len, config.model.embed_dim, config.model.hidden_size

  def make(seed):
    torch.manual_seed(seed)
    embed, rnn = torch.nn.Embedding(V, E), torch.nn.LSTM(E, H, batch_first=True)
    drop, head = torch.nn.Dropout(config.model.dropout), torch.nn.Linear(H, V)
    params = [*embed.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, config.learning_rate)
    carry = {"state": None, "step": 0}

    def run(steps):
      for _ in range(steps):
        tokens, first = text_data.stream_windows(ids, B, T, seed, carry["step"])
        tokens = torch.from_numpy(tokens.astype(np.int64))
        state = None if first else carry["state"]
        opt.zero_grad()
        y, (h, c) = rnn(embed(tokens[:, :-1]), state)
        loss = torch.nn.functional.cross_entropy(head(drop(y)).reshape(-1, V), tokens[:, 1:].reshape(-1))
        loss.backward()
        if config.grad_clip_norm:
          torch.nn.utils.clip_grad_norm_(params, config.grad_clip_norm)
        opt.step()
        carry["state"], carry["step"] = (h.detach(), c.detach()), carry["step"] + 1
      loss.item()
    return run

  return [make(seed) for seed in range(members)]


# --- Memory.

def step_memory(model: str, task, config) -> int:
  """XLA's bytes of the compiled train step: arguments + outputs − aliased (donated) + temporaries."""
  ctx, sweep = task.context, bool(sweeps.fields(config))
  lead = (len(sweeps.members(config)),) if sweep else ()
  B = config.batch_size
  values = {n: jax.ShapeDtypeStruct(v.shape, v.dtype) for n, v in sweeps.member_arrays(config)[1].items()} \
      if sweep else {}
  sds = jax.ShapeDtypeStruct
  if model == "lm":
    args = (sds((*lead, B, config.seq_len + 1), np.int32), np.bool_(True), ctx["train_key"], values)
  else:
    args = (sds((*lead, B, 28, 28, 1), np.uint8), sds((*lead, B), np.int32), ctx["train_key"],
            sds((*lead, B), np.int32), values)
  m = ctx["train_jit"].lower(task.state, *args).compile().memory_analysis()
  return m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes


def _proc_status_mb(field: str) -> float:
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def child_rss(args) -> None:
  """(In a fresh process) set up one configuration and train a few steps; print as JSON its resident set before
  the set-up (after the imports) and its peak (VmHWM) since then. The peak is reset after the imports (writing 5
  to /proc/self/clear_refs) so that it is the task's; `getrusage`'s ru_maxrss would not do: Linux carries it over
  from the parent across exec."""
  model, impl = args.child.split(":")
  config = lm_config(args.smoke, impl) if model == "lm" else image_config(model, args.smoke)
  if args.child_members > 1:
    config = swept(config, args.child_members)
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    reset = True
  except OSError:
    reset = False  # (then the peak may be that of the imports)
  before = _proc_status_mb("VmRSS")
  Runner(setup(model, config, args.smoke)).run(3)
  print(json.dumps({"before_mb": before, "peak_mb": _proc_status_mb("VmHWM"), "reset": reset}))


def rss_mb(model: str, impl: str, members: int, smoke: bool) -> dict:
  out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={model}:{impl}",
                        f"--child_members={members}", *(["--smoke"] if smoke else [])],
                       capture_output=True, text=True)
  if out.returncode:
    sys.exit(f"the RSS child of {model} ({members} member(s)) failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


# --- Measurement.

def interleaved(runs: dict, rounds: int, steps: int) -> dict:
  """Seconds of each candidate in each round; a candidate is a list of runners run one after another (the
  sequential runs) or a single one (the sweep). Two untimed steps of every runner first (compilation, warm-up)."""
  for runners in runs.values():
    for run in runners:
      run(2)
  times = {label: [] for label in runs}
  for _ in range(rounds):
    for label, runners in runs.items():
      start = time.perf_counter()
      for run in runners:
        run(steps)
      times[label].append(time.perf_counter() - start)
  return times


def measure(name: str, model: str, single_config, args, smoke: bool, torch_ok: bool) -> dict:
  """One comparison: the K-member sweep of `single_config` against its K single runs (and torch for the LM)."""
  K = args.members
  sweep_config = swept(single_config, K)
  t0 = time.perf_counter()
  sweep_task = setup(model, sweep_config, smoke)
  singles = [setup(model, sweeps.point_config(sweep_config, m), smoke) for m in sweeps.members(sweep_config)]
  runs = {"sweep": [Runner(sweep_task).run], "sequential": [Runner(t).run for t in singles]}
  if model == "lm" and torch_ok:
    torch_runs = torch_runners(single_config, K, random_texts((single_config.batch_size + 1)
                                                               * single_config.seq_len * 40))
    if torch_runs:
      runs["torch"] = torch_runs
  times = interleaved(runs, args.rounds, args.steps)
  items = K * items_per_step(model, single_config) * args.steps  # of all K members in one round
  rate = {label: items / statistics.median(t) for label, t in times.items()}
  unit = "chars/s" if model == "lm" else "examples/s"
  print(f"  ({time.perf_counter() - t0:.0f} s with set-up and compiling)")
  for label, t in times.items():
    per_round = ", ".join(f"{items / s:,.0f}" for s in t)
    print(f"  {name:<18} {label:<11} {rate[label]:>10,.0f} {unit}  (rounds: {per_round})")
  result = {"name": name, "model": model, "rate": rate, "unit": unit, "ratios": {}}
  for other in ("sequential", "torch"):
    if other in times:
      of_medians = rate["sweep"] / rate[other]
      per_round = statistics.median(o / s for s, o in zip(times["sweep"], times[other]))
      result["ratios"][other] = (of_medians, per_round)
      print(f"  {name:<18} sweep / {other:<10} {of_medians:.2f}x (median of per-round ratios {per_round:.2f}x)")
  single_mb, sweep_mb = step_memory(model, singles[0], single_config) / 2**20, \
      step_memory(model, sweep_task, sweep_config) / 2**20
  result["memory"] = (single_mb, sweep_mb)
  print(f"  {name:<18} XLA step memory (args + outputs − donated + temporaries): single {single_mb:.1f} MB, "
        f"sweep of {K} {sweep_mb:.1f} MB ({sweep_mb / single_mb:.2f}x)")
  if args.rss:
    impl = single_config.model.get("impl", "fused")
    one, many = rss_mb(model, impl, 1, smoke), rss_mb(model, impl, K, smoke)
    grow = lambda r: r["peak_mb"] - r["before_mb"]
    result["rss"] = (one["peak_mb"], many["peak_mb"], grow(one), grow(many))
    since = "since the imports" if one["reset"] and many["reset"] else "since the start (could not reset)"
    print(f"  {name:<18} peak RSS of a fresh process (VmHWM {since}; set-up + 3 steps): single "
          f"{one['peak_mb']:.0f} MB, sweep of {K} {many['peak_mb']:.0f} MB ({many['peak_mb'] / one['peak_mb']:.2f}x); "
          f"above the RSS after the imports: single +{grow(one):.0f} MB, sweep +{grow(many):.0f} MB "
          f"({grow(many) / max(grow(one), 1e-9):.2f}x)")
  sys.stdout.flush()
  return result


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return "unknown CPU"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=5, help="steps of each candidate per round")
  parser.add_argument("--members", type=int, default=None, help="members of each sweep (default 8; 2 with --smoke)")
  parser.add_argument("--models", help="of lm, lstm_mnist, mlp_mnist, cnn_mnist (default all; lm,mlp_mnist with "
                      "--smoke)")
  parser.add_argument("--lm_impls", default="fused", help="model.impl of the LM: fused, scan or fused,scan")
  parser.add_argument("--rss", action=argparse.BooleanOptionalAction, default=None,
                      help="also the peak RSS of a fresh process per configuration (default: on, off with --smoke)")
  parser.add_argument("--no_torch", action="store_true", help="leave PyTorch out even where it is installed")
  parser.add_argument("--torch_passive", action="store_true",
                      help="OMP_WAIT_POLICY=PASSIVE for torch's OpenMP threads (see the header's note on load)")
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  parser.add_argument("--child_members", type=int, default=1, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child_rss(args)
  if args.smoke:
    args.rounds, args.steps = 1, 2
  args.members = args.members or (2 if args.smoke else 8)
  args.models = args.models or ("lm,mlp_mnist" if args.smoke else "lm,lstm_mnist,mlp_mnist,cnn_mnist")
  args.rss = not args.smoke if args.rss is None else args.rss
  if args.torch_passive:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # (read when torch loads its OpenMP runtime)
  try:
    import torch
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  torch_ok = torch_version is not None and not args.no_torch
  omp = "OMP_WAIT_POLICY" in os.environ
  print(f"{cpu_model()}, {os.cpu_count()} CPUs; jax {jax.__version__} on {jax.devices()[0].device_kind}; torch "
        f"{torch_version + ' (2 threads)' if torch_version else 'not installed: its column is skipped'}"
        f"{'; left out (--no_torch)' if torch_version and args.no_torch else ''}"
        f"{', OMP_WAIT_POLICY=' + os.environ['OMP_WAIT_POLICY'] if torch_ok and omp else ''}"
        f"; load average {os.getloadavg()[0]:.1f} (other processes make all figures lower and noisier)")
  torch_spins = torch_ok and os.getloadavg()[0] >= os.cpu_count() and os.environ.get("OMP_WAIT_POLICY") != "PASSIVE"
  if torch_spins:
    print("note: the machine is loaded and torch's OpenMP threads spin-wait; then its steps can take 100x their "
          "time (seen here at a tiny size: 350 ms for a 1.5 ms step); --torch_passive gives its figure under load")
  print(f"{args.members} members (a seed sweep) vs the same {args.members} single runs one after another; "
        f"{args.rounds} round(s) of {args.steps} step(s) each; medians{' (smoke sizes)' if args.smoke else ''}")

  results = []
  for model in args.models.split(","):
    impls = args.lm_impls.split(",") if model == "lm" else [None]
    for impl in impls:
      config = lm_config(args.smoke, impl) if model == "lm" else image_config(model, args.smoke)
      name = f"lm ({impl})" if model == "lm" else model
      if model == "lm":
        shape = (f"batch {config.batch_size}, seq {config.seq_len}, embed {config.model.embed_dim}, hidden "
                 f"{config.model.hidden_size}, model.impl={impl}")
      else:
        shape = f"batch {config.batch_size}, {256 if args.smoke else 2048} random 28x28x1 images"
      print(f"\n== {name}: {shape}", flush=True)
      results.append(measure(name, model, config, args, args.smoke, torch_ok and model == "lm"))

  print(f"\n== summary: the {args.members}-member sweep's throughput / the reference's (of the medians; median of "
        f"per-round ratios); step memory (XLA) sweep / single")
  for r in results:
    parts = []
    for other, (of_medians, per_round) in r["ratios"].items():
      at_issue_size = r["name"] == "lm (fused)" and not args.smoke and args.members == 8
      target = TARGETS.get((r["model"], other)) if at_issue_size else None
      met = f", target ≥ {target}x: {'met' if of_medians >= target else 'not met'}" if target else ""
      if target and other == "torch" and torch_spins:
        met = f", target ≥ {target}x: not judged (torch spin-waited on a loaded machine, see the note)"
      parts.append(f"vs {other} {of_medians:.2f}x ({per_round:.2f}x){met}")
    if r["model"] == "lm" and "torch" not in r["ratios"]:
      parts.append("vs torch: skipped (" + ("not installed" if not torch_version else "--no_torch") + ")")
    single_mb, sweep_mb = r["memory"]
    parts.append(f"memory {sweep_mb / single_mb:.2f}x ({single_mb:.1f} → {sweep_mb:.1f} MB)")
    if "rss" in r:
      one, many, grow_one, grow_many = r["rss"]
      parts.append(f"peak RSS {many / one:.2f}x ({one:.0f} → {many:.0f} MB; above the imports' "
                   f"{grow_many / max(grow_one, 1e-9):.2f}x, +{grow_one:.0f} → +{grow_many:.0f} MB)")
    print(f"  {r['name']:<12} " + "; ".join(parts))


if __name__ == "__main__":
  main()
