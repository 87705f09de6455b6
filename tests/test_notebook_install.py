"""The notebooks' install cell: the same in every notebook, no URL anywhere in a notebook, a clear error without
FNETS_SOURCE, and its choice of what to install (only what is missing; an installed package is kept unless
FNETS_UPGRADE). benchmarks/notebook_install.py runs the cell in fresh virtual environments (needs the package
index, so it is not part of this suite)."""

import ast
import os
import re
import subprocess
import sys

import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")


def notebooks() -> dict:
  return {name[:-len(".ipynb")]: nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
          for name in sorted(os.listdir(NOTEBOOKS)) if name.endswith(".ipynb")}


def install_cell() -> str:
  """The install cell (each notebook's first code cell), checked to be the same in every notebook."""
  cells = {name: next(c for c in nb.cells if c.cell_type == "code").source for name, nb in notebooks().items()}
  (source,) = set(cells.values())
  return source


def cell_functions(**fakes) -> dict:
  """The cell's imports and functions (nothing run), with `fakes` replacing some of them."""
  tree = ast.parse(install_cell())
  tree.body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef))]
  namespace = {}
  exec(compile(tree, "install_cell", "exec"), namespace)
  namespace.update(fakes)
  return namespace


def test_every_notebook_has_the_same_install_cell():
  names = list(notebooks())
  assert len(names) == 4
  cell = install_cell()
  assert 'FNETS_SOURCE = ""  # @param {type:"string"}' in cell
  assert "import fnets" in cell


def test_no_notebook_holds_a_url():
  # The project has no public repository yet: no badge, no clone URL, nobody else's address.
  for name, nb in notebooks().items():
    for cell in nb.cells:
      assert not re.search(r"https?://|github\.com|www\.", cell.source), (name, cell.source[:200])


def test_without_source_the_cell_says_what_to_set(tmp_path):
  # -S: no site-packages, so no installed fnets (as in a fresh Colab runtime).
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FNETS_SOURCE")}
  proc = subprocess.run([sys.executable, "-S", "-c", install_cell()], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode != 0
  assert "RuntimeError: fnets is not installed here: set FNETS_SOURCE" in proc.stderr
  assert "git URL of the fnets repository or of your fork, or to the path of a checkout" in proc.stderr


REQUIREMENTS = ["jax>=0.10.2,<0.11", "flax>=0.12.8,<0.13", "optax>=0.2.8,<0.3", "numpy>=2.0",
                'array-record>=0.8; sys_platform == "nonesuch"', "matplotlib"]


def test_only_missing_requirements_are_installed_and_installed_ones_kept():
  installed = {"jax": "0.4.30", "jax-cuda12-plugin": "0.4.30", "flax": "0.12.9", "numpy": "2.1.0"}
  cell = cell_functions(_version=installed.get)
  install, kept = cell["_to_install"](REQUIREMENTS, False)
  assert install == ["optax>=0.2.8,<0.3", "matplotlib"]  # missing; the marker excludes array-record
  assert kept == ["jax 0.4.30 (fnets is tested with jax<0.11,>=0.10.2)"]


def test_upgrade_installs_out_of_range_jax_with_its_accelerator_plugin():
  for plugin, extra in (("jax-cuda12-plugin", "cuda12"), ("libtpu", "tpu")):
    installed = {"jax": "0.4.30", plugin: "0.4.30", "flax": "0.12.9", "numpy": "2.1.0"}
    install, kept = cell_functions(_version=installed.get)["_to_install"](REQUIREMENTS, True)
    assert install == [f"jax[{extra}]<0.11,>=0.10.2", "optax>=0.2.8,<0.3", "matplotlib"] and kept == []
  installed = {"jax": "0.4.30", "numpy": "1.26.4"}
  install, kept = cell_functions(_version=installed.get)["_to_install"](REQUIREMENTS, True)
  assert install == ["jax>=0.10.2,<0.11", "flax>=0.12.8,<0.13", "optax>=0.2.8,<0.3", "numpy>=2.0", "matplotlib"]
