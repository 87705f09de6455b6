"""The notebooks' install cell: the same few lines in every notebook, no URL anywhere in a notebook, a clear error
without FNETS_SOURCE, and the one requirement it gives pip (fnets from the source, with jax's plugin where the
runtime has one). benchmarks/notebooks_in_colab.py runs the notebooks, this cell included, in Colab's runtime
(it needs the package index, so it is not part of this suite)."""

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


def test_every_notebook_has_the_same_short_install_cell():
  names = list(notebooks())
  assert len(names) == 4
  cell = install_cell()
  assert 'FNETS_SOURCE = ""  # @param {type:"string"}' in cell
  assert cell.rstrip().endswith("import fnets  # first: it sets XLA's CPU flag before JAX starts")
  assert len(cell.splitlines()) <= 25  # pip resolves; the cell only names what to install


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


def test_the_requirement_names_the_source_and_the_runtimes_jax_plugin(tmp_path):
  requirement = cell_functions()["fnets_requirement"]
  checkout = tmp_path / "fnets-src"
  checkout.mkdir()
  assert requirement(str(checkout), {"jax", "numpy"}) == f"fnets[notebooks] @ {checkout.as_uri()}"
  # Colab's GPU runtime has jax with its CUDA plugin: pip replaces both, at one version.
  assert requirement("https://host/me/fnets.git", {"jax", "jax-cuda12-plugin"}) == (
      "fnets[notebooks,cuda12] @ git+https://host/me/fnets.git")
  assert requirement("git+ssh://host/fnets", {"jax", "libtpu"}) == "fnets[notebooks,tpu] @ git+ssh://host/fnets"


def test_the_requirement_is_one_pip_reads(tmp_path):
  """A PEP 508 requirement: fnets, the extras asked for, at the checkout's URL (pip's own parser)."""
  try:
    from packaging.requirements import Requirement
  except ImportError:
    from pip._vendor.packaging.requirements import Requirement
  requirement = Requirement(cell_functions()["fnets_requirement"](ROOT, {"jax-cuda13-plugin"}))
  assert (requirement.name, requirement.extras, requirement.url) == ("fnets", {"notebooks", "cuda13"},
                                                                      f"file://{ROOT}")
