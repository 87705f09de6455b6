"""The four notebooks, top to bottom, in Colab's published CPU runtime, as a new user runs them: fnets not installed,
FNETS_SOURCE set to a copy of this checkout, real data from TFDS_DATA_DIR, the notebooks' own settings.

  python benchmarks/notebooks_in_colab.py --venv=/tmp/colab --build     # makes the runtime's environment first
  TFDS_DATA_DIR=../shared/tfds python benchmarks/notebooks_in_colab.py --venv=/tmp/colab [--steps=N] [NAME ...]

The environment is Colab's package set as googlecolab/backend-info's pip-freeze.txt publishes it (commit "Upgrade
to Python 3.13", 2026-08-19) for the packages that decide whether fnets runs (COLAB below), on Python 3.13; the
rest is what pip resolves beside them. Before each notebook the environment is put back to that set and fnets is
removed, so every notebook meets the runtime as Colab starts it. Its install cell then does what it does in
Colab. --steps=N caps the notebooks' step counts (their settings cell) for a quicker check. Not part of the test
suite: it needs the package index and about 3 GB.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart", "lstm_from_equations", "vmap_grad_recipes", "vanishing_gradients")
COLAB = ["jax==0.7.2", "jaxlib==0.7.2", "flax==0.11.2", "absl-py==1.4.0", "protobuf==5.29.6", "tensorflow==2.20.0",
         "tensorflow-datasets==4.9.10", "tensorflow-metadata==1.21.0"]
KERNEL = ["ipykernel", "nbclient", "nbformat", "matplotlib"]  # Colab's kernel and what it preinstalls for plots
REPORTED = ("jax", "jaxlib", "flax", "protobuf", "tensorflow", "tensorflow-datasets", "numpy", "fnets")
# The settings that hold a number of steps, per notebook (capped by --steps).
STEP_SETTINGS = {"quickstart": ("MAX_STEPS",), "lstm_from_equations": ("STEPS",),
                 "vmap_grad_recipes": ("STEPS", "SWEEP_EPOCHS"), "vanishing_gradients": ("STEPS",)}


def pip(python, *args):
  subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)


def copy_checkout(dest):
  files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
  for name in files.decode().split("\0"):
    if name and os.path.exists(os.path.join(ROOT, name)):
      os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
      shutil.copy2(os.path.join(ROOT, name), os.path.join(dest, name))
  return dest


def versions() -> dict:
  from importlib import metadata
  out = {}
  for name in REPORTED:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  return out


def run_notebook(name, source, steps) -> dict:
  """In this (the runtime's) interpreter: one notebook in a fresh kernel; its outcome."""
  import nbformat
  from nbclient import NotebookClient
  nb = nbformat.read(os.path.join(ROOT, "notebooks", f"{name}.ipynb"), as_version=4)
  if steps:
    (index,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    capped = "".join(f"{key} = {steps if key != 'SWEEP_EPOCHS' else 1}\n" for key in STEP_SETTINGS[name])
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(capped))
  nb.cells.append(nbformat.v4.new_code_cell(
      "import importlib.metadata as _m\nprint('VERSIONS', {n: _m.version(n) for n in ('jax', 'flax', 'protobuf')})"))
  work = tempfile.mkdtemp(prefix=f"colab_{name}_")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  env.update(FNETS_SOURCE=source, TMPDIR=work)
  start, error = time.time(), None
  try:
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": work}}).execute(env=env)
  except Exception as e:  # a failing cell: its error is the outcome
    error = str(e).strip().splitlines()[-1][:300]
  outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
  pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
  said = [line for line in outputs.splitlines() if line.startswith("VERSIONS")]
  return {"notebook": name, "ok": error is None, "seconds": round(time.time() - start), "figures": pngs,
          "error": error, "kernel_saw": said[-1][9:] if said else None}


def inside(args):
  """Run by the runtime's interpreter: reset, run, report, for each notebook."""
  source = copy_checkout(tempfile.mkdtemp(prefix="fnets_source_"))
  results = []
  for name in args.names or NOTEBOOKS:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "fnets"], capture_output=True)
    pip(sys.executable, *COLAB, *KERNEL)
    before = versions()
    result = run_notebook(name, source, args.steps)
    result.update(before={k: before[k] for k in ("jax", "protobuf")}, after=versions())
    print(json.dumps(result), flush=True)
    results.append(result)
  ok = sum(r["ok"] for r in results)
  print(f"{ok} passed, {len(results) - ok} failed")
  return 0 if ok == len(results) else 1


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--venv", required=True, help="the runtime's virtual environment")
  parser.add_argument("--build", action="store_true", help="make it first (Python 3.13 from pyenv or PATH)")
  parser.add_argument("--steps", type=int, default=0, help="cap the notebooks' step settings (0: as shipped)")
  parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("names", nargs="*", help=f"notebooks to run (default: all): {', '.join(NOTEBOOKS)}")
  args = parser.parse_args()
  if unknown := set(args.names) - set(NOTEBOOKS):
    parser.error(f"unknown notebooks {sorted(unknown)}; choose from {', '.join(NOTEBOOKS)}")
  if args.inside:
    return inside(args)
  python = os.path.join(args.venv, "bin", "python")
  if args.build:
    base = subprocess.run(["pyenv", "prefix", "3.13.0"], capture_output=True, text=True).stdout.strip()
    subprocess.run([os.path.join(base, "bin", "python") if base else "python3.13", "-m", "venv", args.venv],
                   check=True)
    pip(python, *COLAB, *KERNEL)
  print("runtime:", subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                                   text=True).stdout.strip(), "| packages:", " ".join(COLAB), flush=True)
  return subprocess.run([python, os.path.abspath(__file__), "--inside", f"--venv={args.venv}",
                         f"--steps={args.steps}", *args.names]).returncode


if __name__ == "__main__":
  sys.exit(main())
