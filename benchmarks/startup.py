"""Start-up of a run: seconds from the command to its first training step, as a user meets it, with fnets' caches
(decoded images, JAX's compiled programs; fnets/__init__.py) empty, warm, and turned off.

  TFDS_DATA_DIR=../shared/tfds python benchmarks/startup.py [--experiment=cnn_cifar] [--rounds=2]
  python benchmarks/startup.py --smoke   # one round of mlp_mnist through tests/mocked_launch.py: no data needed

Each round, in a new empty cache dir and new workdirs, runs `launch.py --config.max_steps=1` (then 2 to resume):
  first    a first start: nothing cached (images decoded, every step compiled)
  second   the same command in another workdir: both caches warm
  resume   the first run resumed (restores its checkpoint), caches warm
  resume, no compile cache   the same resume with JAX_ENABLE_COMPILATION_CACHE=false: what a resume cost before
The time is taken when the `[train] step 1` (or 2) line appears; the rest of the command (its final test
evaluation) is not counted. Run it alone on the machine: the launches take both cores.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seconds_to_first_step(launcher: str, args: list[str], env: dict, step: int) -> float:
  start = time.perf_counter()
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, launcher), *args], env=env, cwd=ROOT,
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  seen, lines = None, []
  for line in proc.stderr:
    lines.append(line)
    if seen is None and line.startswith(f"[train] step {step}/"):
      seen = time.perf_counter() - start
  if proc.wait() != 0 or seen is None:
    raise SystemExit(f"{launcher} {' '.join(args)} failed:\n{''.join(lines[-20:])}")
  return seen


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--experiment", default="cnn_cifar")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--smoke", action="store_true", help="1 round of mlp_mnist (batch 16) on mocked TFDS data")
  args = parser.parse_args()
  launcher, extra = "launch.py", []
  if args.smoke:  # TFDS mocked: random examples with the real features (tests/tfds_metadata), 64 per split
    launcher, extra, args.experiment, args.rounds = "tests/mocked_launch.py", ["--config.batch_size=16"], "mlp_mnist", 1
  names = ["first", "second", "resume", "resume, no compile cache"]
  times = {name: [] for name in names}
  for _ in range(args.rounds):
    with tempfile.TemporaryDirectory() as tmp:
      env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
      env["FNETS_CACHE_DIR"] = os.path.join(tmp, "cache")
      # (tta=none: the final test evaluation, not timed here, then takes one view instead of six.)
      run = lambda workdir, steps: [f"--experiment={args.experiment}", f"--workdir={tmp}/{workdir}",
                                    f"--config.max_steps={steps}", "--config.log_every_steps=1", "--config.tta=none",
                                    *extra]
      times["first"].append(seconds_to_first_step(launcher, run("a", 1), env, 1))
      times["second"].append(seconds_to_first_step(launcher, run("b", 1), env, 1))
      times["resume"].append(seconds_to_first_step(launcher, run("a", 2), env, 2))
      times["resume, no compile cache"].append(seconds_to_first_step(
          launcher, run("b", 2), {**env, "JAX_ENABLE_COMPILATION_CACHE": "false"}, 2))
    print("  ".join(f"{name} {times[name][-1]:.1f} s" for name in names), flush=True)
  median = lambda xs: sorted(xs)[len(xs) // 2]
  print(f"\n{args.experiment}: seconds from the command to the first step, median of {args.rounds} rounds")
  for name in names:
    print(f"  {name:<26} {median(times[name]):6.1f}   ({', '.join(f'{t:.1f}' for t in times[name])})")
  print(f"  second start sooner than the first by {median(times['first']) - median(times['second']):.1f} s; "
        f"resume with the compile cache sooner by "
        f"{median(times['resume, no compile cache']) - median(times['resume']):.1f} s")


if __name__ == "__main__":
  main()
