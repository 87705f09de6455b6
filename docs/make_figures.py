"""Renders the figures of the README and docs/results.md from real runs: executes three notebooks at their default
settings on real data and saves one figure of each as docs/figures/NAME.png.

  TFDS_DATA_DIR=$PWD/../shared/tfds python docs/make_figures.py     # ~10 minutes on a 2-core CPU

The notebooks are run in a temporary copy (never written back); each figure is the PNG the notebook drew, found
by its cell's title. Needs fnets installed with the test extra (`pip install -e ".[test]"`: nbclient, ipykernel,
matplotlib; the notebooks import the installed fnets) and mnist and tiny_shakespeare.
"""

import base64
import os
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "figures")
# figure name → (notebook, a string that only the figure's cell contains)
FIGURES = {
    "cnn_mnist_training": ("quickstart", 'ax_loss.set_yscale("log")'),
    "lstm_gates": ("lstm_from_equations", '"forget gate f"'),
    "gradient_flow": ("vanishing_gradients", "gradient flow through time"),
}


def main():
  if not os.environ.get("TFDS_DATA_DIR"):
    sys.exit("error: set TFDS_DATA_DIR to a TFDS data dir holding mnist and tiny_shakespeare (an absolute path)")
  os.makedirs(OUT, exist_ok=True)
  env = {**os.environ, "TFDS_DATA_DIR": os.path.abspath(os.environ["TFDS_DATA_DIR"])}
  for name, (notebook, marker) in FIGURES.items():
    start = time.perf_counter()
    nb = nbformat.read(os.path.join(ROOT, "notebooks", f"{notebook}.ipynb"), as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
      NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute(env=env)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    (png,) = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
    path = os.path.join(OUT, f"{name}.png")
    with open(path, "wb") as f:
      f.write(base64.b64decode(png))
    print(f"{path}: {os.path.getsize(path) // 1024} KiB, from notebooks/{notebook}.ipynb in "
          f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
  main()
