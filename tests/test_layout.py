"""The package's shape: imports run one way, config.py needs no JAX, importing fnets changes nothing a user set
and attaches no handler, the library checks its inputs itself, and a built wheel works outside the checkout."""

import ast
import glob
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "fnets")


def module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
  return rel.removesuffix(".__init__")


def imports_of(path: str, modules: set[str]) -> set[str]:
  """The fnets modules that `path` imports, at any depth of its code (inside functions too)."""
  out = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in modules:  # `import fnets.x.y` of a module fnets.x.y, else its package
        name = name.rpartition(".")[0]
      if name:
        out.add(name)
  return out


def import_graph() -> dict[str, set[str]]:
  paths = glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)
  modules = {module_name(p) for p in paths}
  return {module_name(p): imports_of(p, modules) - {module_name(p)} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for other in sorted(graph.get(node, ())):
      if state.get(other) == "open":
        return stack[stack.index(other):] + [other]
      if other not in state and (cycle := visit(other)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_imports_run_one_way():
  graph = import_graph()
  assert {"fnets.errors", "fnets.config", "fnets.state", "fnets.loop", "fnets.tasks.classify"} <= set(graph)
  assert find_cycle(graph) is None, " → ".join(find_cycle(graph))
  assert graph["fnets.errors"] == set()
  assert graph["fnets.config"] == {"fnets.errors"}
  # The detector itself finds a circle like the one this layout removed (config → loop → runs → config).
  assert find_cycle({"config": {"loop"}, "loop": {"runs"}, "runs": {"config"}}) == ["config", "loop", "runs", "config"]


def run_python(code: str, env=None, cwd=None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                        env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=120)


def test_config_needs_no_jax_and_importing_fnets_attaches_no_handler_nor_torch():
  proc = run_python("""
      import logging, sys
      import fnets.config, fnets.errors
      assert "jax" not in sys.modules, "config.py imported JAX"
      from fnets import loop, run_log
      assert logging.getLogger("fnets").handlers == [], logging.getLogger("fnets").handlers
      run_log._summary_writer()  # (tensorboardX imports torch where it can; a run writes floats)
      assert "torch" not in sys.modules, "the TensorBoard writer imported torch"
      import importlib.util
      if importlib.util.find_spec("torch"):
        import torch  # still importable by the user
      print("ok")
  """)
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_xla_flag_is_set_only_for_checked_jaxlib_versions():
  import fnets
  flag = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
  for version in ("0.10.2", "0.11.2", "0.12.1"):
    assert fnets.xla_cpu_flag("", version) == flag
  assert fnets.xla_cpu_flag("--xla_dump_to=/tmp/x", "0.10.0") == f"--xla_dump_to=/tmp/x {flag}"
  assert fnets.xla_cpu_flag("--xla_cpu_experimental_ynn_fusion_type=all", "0.10.2") is None  # the user's own
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # an unchecked jaxlib starts without the flag, and without a warning
    assert fnets.xla_cpu_flag("", "0.13.0") is None
    assert fnets.xla_cpu_flag("", "0.9.2") is None
    assert fnets.xla_cpu_flag("", None) is None
  # In a process whose jaxlib is a checked one, the flag is in the environment; a user's XLA_FLAGS stay.
  proc = run_python("import os, fnets; print(os.environ['XLA_FLAGS'])", env={"XLA_FLAGS": "--xla_dump_to=/tmp/d"})
  assert proc.stdout.strip() == f"--xla_dump_to=/tmp/d {flag}", proc.stderr
  assert proc.stderr == "", proc.stderr


def test_library_checks_the_config_before_anything_is_read_or_written(tmp_path, mock_tfds):
  """From a notebook: the same one-line ConfigError as the launcher's, before data is read or the workdir made."""
  from fnets import config as config_lib
  from fnets import loop
  from fnets.errors import ConfigError
  from fnets.experiments import cnn_mnist, lstm_shakespeare
  config = cnn_mnist.get_config()
  config.batch_size = 0
  for run in (loop.train_and_evaluate, loop.evaluate_checkpoint, loop.export):
    with pytest.raises(ConfigError) as error:
      run(config, str(tmp_path / "run"))
    assert str(error.value) == "--config.batch_size=0: must be a positive integer"
  lm = config_lib.override(lstm_shakespeare.get_config(), ["--config.model.cell=gru"])
  with pytest.raises(ConfigError, match="model.cell='gru': unknown choice; choose one of: lstm, rnn"):
    loop.train_and_evaluate(lm, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_first_line_a_user_sees_is_fnets_own(tmp_path):
  """TFDS's advice to install OpenCV (printed when it decodes an image with PIL) does not come first."""
  proc = subprocess.run([sys.executable, os.path.join("tests", "mocked_launch.py"), "--experiment=mlp_mnist",
                         "--config.max_steps=1", "--config.batch_size=16", f"--workdir={tmp_path / 'run'}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stderr.splitlines()[0].startswith("classify: "), proc.stderr[:500]
  assert "OpenCV" not in proc.stderr


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
  """The wheel `python -m build` makes, installed into a fresh virtual environment. That environment sees this
  one's packages (jax, flax, ...: its site-packages listed in a .pth file, whose own .pth files, such as an
  editable fnets, are not run), in a virtual environment as in the base interpreter; fnets comes from the wheel."""
  tmp = tmp_path_factory.mktemp("wheel")
  build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), ROOT],
                         capture_output=True, text=True, timeout=300)
  assert build.returncode == 0, build.stderr[-3000:]
  (wheel,) = glob.glob(str(tmp / "dist" / "fnets-*.whl"))
  subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=120)
  python = str(tmp / "venv" / "bin" / "python")
  site_dir = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
  ours = [p for p in sys.path if os.path.basename(p) == "site-packages" and os.path.isdir(p)]
  with open(os.path.join(site_dir, "this_environment.pth"), "w") as f:
    f.write("".join(f"{p}\n" for p in ours))
  install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--force-reinstall", "--quiet", wheel],
                           capture_output=True, text=True, timeout=300)
  assert install.returncode == 0, install.stderr[-3000:]
  outside = tmp / "elsewhere"  # not the checkout: nothing of it is on the path
  outside.mkdir()
  return python, outside


def test_wheel_gives_the_fnets_command_and_its_experiments(wheel_env):
  python, outside = wheel_env
  bin_dir = os.path.dirname(python)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  where = subprocess.run([python, "-c", "import fnets; print(fnets.__file__)"], cwd=outside, env=env,
                         capture_output=True, text=True, timeout=60)
  assert where.stdout.startswith(os.path.dirname(bin_dir)), where  # the wheel's fnets, not the checkout's
  for command in ([os.path.join(bin_dir, "fnets"), "--list"], [python, "-m", "fnets", "--list"]):
    proc = subprocess.run(command, cwd=outside, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"cnn_cifar", "cnn_mnist", "mlp_mnist", "lstm_mnist", "lstm_shakespeare"} <= {
        line.split()[0] for line in proc.stdout.splitlines() if not line.startswith(" ")}
  # A 2-step run on mock data, through the installed command's entry point.
  script = outside / "mocked.py"
  script.write_text(textwrap.dedent(f"""
      import sys
      import tensorflow_datasets as tfds
      from fnets.main import run
      with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_FILES,
                                  data_dir={os.path.join(ROOT, "tests", "tfds_metadata")!r}):
        run()
  """))
  proc = subprocess.run([python, str(script), "--experiment=mlp_mnist", "--config.max_steps=2",
                         "--config.batch_size=8", "--config.log_every_steps=1", f"--workdir={outside / 'run'}"],
                        cwd=outside, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "[train] step 2/2" in proc.stderr and (outside / "run" / "metrics.jsonl").exists()
