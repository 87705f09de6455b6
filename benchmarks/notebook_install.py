"""Runs the notebooks' install cell (the same in every notebook) in fresh virtual environments against this
checkout, as a Colab kernel runs it, and checks what it installed and that fnets and the experiments import.

  python benchmarks/notebook_install.py

Not part of the test suite: each case installs jax, flax, TFDS, ... from the package index into a new virtual
environment (about 1 GB, a minute or more each), removed afterwards. The cases:
  unset     FNETS_SOURCE empty, fnets not installed: the cell stops with a message naming FNETS_SOURCE.
  path      FNETS_SOURCE = a copy of this checkout's files; absl-py 2.0.0 (below fnets' range) is installed first,
            as a stand-in for a package Colab has at another version: the cell keeps it and says so.
  rerun     the cell again in the `path` environment, now a new process: fnets is installed, pip is not run.
  git       FNETS_SOURCE = file://THIS_CHECKOUT (its committed HEAD): the cell clones it, as it would a fork's URL.
  conflict  numpy 1.26.4 installed first (fnets and jax need numpy 2): the cell refuses to change it and says
            FNETS_UPGRADE=1 would; then with FNETS_UPGRADE=1 it installs and fnets imports.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from test_notebook_install import install_cell  # noqa: E402  (the cell, checked identical in every notebook)

# After the cell: what a notebook imports next, and the versions the cell left.
CHECK = """
import importlib.metadata, json
from fnets.experiments import cnn_mnist, lstm_shakespeare
from fnets.tasks import char_lm, classify
print("CHECK " + json.dumps({"fnets": fnets.__file__, "numpy": importlib.metadata.version("numpy"),
                             "absl-py": importlib.metadata.version("absl-py"),
                             "jax": importlib.metadata.version("jax")}))
"""


def venv(path, *preinstall):
  subprocess.run([sys.executable, "-m", "venv", path], check=True)
  if preinstall:
    subprocess.run([os.path.join(path, "bin", "pip"), "install", "-q", "--no-cache-dir", *preinstall], check=True)
  return os.path.join(path, "bin", "python")


def run_cell(python, cwd, check=True, **env):
  """Runs the install cell (then CHECK) as one kernel would; returns (seconds, returncode, output, check dict)."""
  clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FNETS_SOURCE",
                                                            "FNETS_UPGRADE")}
  with open(os.path.join(cwd, "cell.py"), "w") as f:
    f.write(install_cell() + (CHECK if check else ""))
  start = time.time()
  proc = subprocess.run([python, "cell.py"], cwd=cwd, env={**clean, "PIP_NO_CACHE_DIR": "1", **env},
                        capture_output=True, text=True)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("CHECK ")]
  return time.time() - start, proc.returncode, proc.stdout + proc.stderr, json.loads(lines[0][6:]) if lines else None


def copy_checkout(dest):
  files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
  for name in files.decode().split("\0"):
    if name and os.path.exists(os.path.join(ROOT, name)):
      os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
      shutil.copy2(os.path.join(ROOT, name), os.path.join(dest, name))
  return dest


def du(path):
  return subprocess.run(["du", "-sh", path], capture_output=True, text=True).stdout.split()[0]


def report(case, seconds, rc, output, checked, size=""):
  said = [line for line in output.splitlines() if line.startswith(("fnets install:", "RuntimeError"))]
  print(f"== {case}: {seconds:.0f} s, exit {rc}{', venv ' + size if size else ''}")
  for line in said:
    print("   " + line)
  if checked:
    print("   imported:", checked)


def main():
  results = {}
  with tempfile.TemporaryDirectory(prefix="fnets_nb_install_") as tmp:
    # unset and path, rerun: one environment.
    python = venv(os.path.join(tmp, "v1"), "absl-py==2.0.0")
    case = os.path.join(tmp, "path")
    os.makedirs(case)
    seconds, rc, out, checked = run_cell(python, case, FNETS_SOURCE="")
    report("unset", seconds, rc, out, checked)
    results["unset"] = rc != 0 and "set FNETS_SOURCE" in out and checked is None
    src = copy_checkout(os.path.join(tmp, "src"))
    seconds, rc, out, checked = run_cell(python, case, FNETS_SOURCE=src)
    report("path", seconds, rc, out, checked, du(os.path.join(tmp, "v1")))
    results["path"] = (rc == 0 and checked["fnets"] == os.path.join(src, "fnets", "__init__.py")
                       and checked["absl-py"] == "2.0.0" and "keeping absl-py 2.0.0" in out)
    seconds, rc, out, checked = run_cell(python, case, FNETS_SOURCE=src)
    report("rerun", seconds, rc, out, checked)
    results["rerun"] = rc == 0 and checked is not None and "fnets install:" not in out
    shutil.rmtree(os.path.join(tmp, "v1"))

    python = venv(os.path.join(tmp, "v2"))
    case = os.path.join(tmp, "git")
    os.makedirs(case)
    seconds, rc, out, checked = run_cell(python, case, FNETS_SOURCE="file://" + ROOT)
    report("git", seconds, rc, out, checked, du(os.path.join(tmp, "v2")))
    results["git"] = rc == 0 and checked["fnets"] == os.path.join(case, "fnets-src", "fnets", "__init__.py")
    shutil.rmtree(os.path.join(tmp, "v2"))

    python = venv(os.path.join(tmp, "v3"), "numpy==1.26.4")
    case = os.path.join(tmp, "conflict")
    os.makedirs(case)
    seconds, rc, out, checked = run_cell(python, case, FNETS_SOURCE=src)
    numpy_after = subprocess.run([python, "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                                 text=True).stdout.strip()
    report("conflict", seconds, rc, out, checked)
    print("   numpy after:", numpy_after)
    results["conflict"] = rc != 0 and numpy_after == "1.26.4" and "FNETS_UPGRADE=1 lets it" in out
    seconds, rc, out, checked = run_cell(python, case, FNETS_SOURCE=src, FNETS_UPGRADE="1")
    report("conflict, FNETS_UPGRADE=1", seconds, rc, out, checked, du(os.path.join(tmp, "v3")))
    results["upgrade"] = rc == 0 and checked is not None and checked["numpy"] != "1.26.4"
  print(results)
  print(f"{sum(results.values())} passed, {len(results) - sum(results.values())} failed")
  return 0 if all(results.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
