"""Every notebook in notebooks/ run top to bottom in a Jupyter kernel, headless, as a reader would run it, but
with tiny settings and TFDS mocked inside the kernel (random examples with the real features and splits).

No cell may fail, each notebook must draw its figures (image/png outputs), and the numbers it reports must be
sane. The executed notebooks stay in memory: nothing is written into the repository.
"""

import ast
import asyncio
import importlib
import json
import math
import os
import re

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from scipy import stats as scipy_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
METADATA = os.path.join(ROOT, "tests", "tfds_metadata")

# Injected right after each notebook's settings cell (the one tagged "parameters"): from then on every TFDS
# dataset in the kernel is mocked, and the run goes to the test's temporary directory.
MOCK = """\
import tensorflow_datasets as tfds
_mock_data = tfds.testing.mock_data(num_examples={num_examples}, policy=tfds.testing.MockPolicy.USE_FILES,
                                    data_dir={metadata!r})
_mock_data.__enter__()
WORKDIR = {workdir!r}
"""

# Per notebook: the settings that make it small, the least number of figures it draws, and a last cell that
# prints what it found as one JSON line (checked in `check_*` below). They run in this order, two at a time: the
# two LSTM notebooks apart, so that the second finds the first's compiled train step in the cache.
NOTEBOOK_CASES = {
    "lstm_from_equations": dict(
        settings=dict(STEPS=4, HIDDEN=8, EMBED=4, BATCH_SIZE=4, SEQ_LEN=16, PROMPT="a", SAMPLE_LENGTH=20,
                      SNIPPET=40, TEMPERATURES=(0.5, 1.0)),
        figures=4,
        report="{'max_diff': {k: float(v) for k, v in max_diff.items()}, 'samples': samples, 'val': val,"
               " 'snippet': snippet, 'gates': {k: [float(trace[k].min()), float(trace[k].max())] for k in 'figo'}}"),
    "quickstart": dict(
        settings=dict(NUM_EPOCHS=2, MAX_STEPS=0, BATCH_SIZE=16, LOG_EVERY_STEPS=2),
        figures=2,
        report="{'test': test_metrics, 'best_eval': best_eval, 'recomputed': float(np.mean(predicted == labels)),"
               " 'eval_steps': column(eval_log, 'step')}"),
    "vmap_grad_recipes": dict(
        settings=dict(STEPS=6, BATCH_SIZE=16, HIDDEN=8, LEARNING_RATES=(0.01, 0.1, 0.5), ENSEMBLE_SIZE=3,
                      NUM_EXAMPLES=16, SWEEP_SEEDS=(0, 1, 2), SWEEP_RATES=(0.01, 0.5), SWEEP_EPOCHS=2),
        figures=6,
        # (the sweep's eval rows as the run wrote them, and what the notebook drew of them)
        report="{'rate_accuracy': [float(a) for a in rate_accuracy], 'losses_shape': list(losses.shape),"
               " 'member_accuracy': [float(a) for a in member_accuracy], 'ensemble_accuracy': float(ensemble_accuracy),"
               " 'grad_check': float(grad_check), 'norms': [float(n) for n in norms],"
               " 'saliency_shape': list(saliency_maps.shape), 'sweep': summary,"
               " 'sweep_evals': [r for r in map(json.loads, open(os.path.join(WORKDIR, 'metrics.jsonl')))"
               " if r['split'] == 'eval'], 'sweep_lines': [[float(y) for y in line.get_ydata()]"
               " for line in sweep_ax.lines], 'sweep_bands': len(sweep_ax.collections)}"),
    "vanishing_gradients": dict(
        settings=dict(STEPS=4, HIDDEN=8, EMBED=4, BATCH_SIZE=4, SEQ_LEN=16, FLOW_LEN=110, FLOW_WINDOWS=4, PROMPT="a"),
        figures=2,
        report="results"),
}


def settings_cell_index(nb) -> int:
  (index,) = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
  return index


def assigned_names(source: str) -> set[str]:
  return {target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
          for target in node.targets if isinstance(target, ast.Name)}


async def run_notebook(name: str, tmp_path) -> tuple[list, dict]:
  """Executes notebooks/NAME.ipynb with the case's settings; returns (its cells, the final report)."""
  case = NOTEBOOK_CASES[name]
  nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
  index = settings_cell_index(nb)
  # A setting the notebook no longer has would leave it running at full size: fail instead.
  missing = set(case["settings"]) - assigned_names(nb.cells[index].source)
  assert not missing, f"{name}'s settings cell has no {sorted(missing)}"
  workdir = tmp_path / "work"
  workdir.mkdir()
  small = "".join(f"{key} = {value!r}\n" for key, value in case["settings"].items())
  inject = MOCK.format(num_examples=64, metadata=METADATA, workdir=str(workdir)) + small
  report = f"import json\nprint('REPORT ' + json.dumps({case['report']}))"
  nb.cells[index + 1:index + 1] = [nbformat.v4.new_code_cell(inject)]
  nb.cells.append(nbformat.v4.new_code_cell(report))
  # The kernel runs in the temporary directory (also its TMPDIR); the notebook is never written back. Like every
  # launch of the suite, it compiles with most of XLA's optimisations off, into the suite's cache (conftest.py).
  client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
  await client.async_execute(env={
      **os.environ, "TMPDIR": str(tmp_path)})
  (line,) = [line for line in "".join(o.get("text", "") for o in nb.cells[-1].outputs).splitlines()
             if line.startswith("REPORT ")]
  return nb.cells, json.loads(line[len("REPORT "):])


@pytest.fixture(scope="module")
def executed(request, tmp_path_factory) -> dict:
  """{name: (cells, report) or the exception} of the notebooks whose tests were selected, run two at a time
  (each kernel is mostly single-threaded: compiling)."""
  names = [item.callspec.params["name"] for item in request.session.items
           if getattr(item, "originalname", None) == "test_notebook_runs_and_draws_its_figures"]
  slots = asyncio.Semaphore(max(1, min(2, os.cpu_count() or 1)))

  async def run(name):
    async with slots:
      return await run_notebook(name, tmp_path_factory.mktemp(name))

  async def run_all():
    return await asyncio.gather(*map(run, names), return_exceptions=True)

  return dict(zip(names, asyncio.run(run_all())))


def figures(cells) -> int:
  return sum("image/png" in output.get("data", {}) for cell in cells for output in cell.get("outputs", []))


def finite(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def check_quickstart(report, printed):
  test = report["test"]
  assert test["num_examples"] == 64 and 0.0 <= test["accuracy"] <= 1.0 and finite(test["loss"])
  assert report["eval_steps"] == [4, 8]  # 64 examples in batches of 16: 4 steps an epoch, 2 epochs
  # The restored best checkpoint's predictions reproduce its logged test accuracy.
  assert report["recomputed"] == pytest.approx(report["best_eval"], abs=1e-6)
  assert f"test accuracy {test['accuracy']:.2%} on 64 images" in printed


def check_lstm_from_equations(report, printed):
  # The scanned gate equations and the fused LSTM (hand-written backward) agree, values and gradients.
  assert all(finite(d) and d < 1e-4 for d in report["max_diff"].values()), report["max_diff"]
  assert len(report["samples"]) == 2
  for text in report["samples"]:
    assert text.startswith("a") and len(text) == 21
  assert finite(report["val"]["loss"])
  assert len(report["snippet"]) == 40
  for gate in "fio":
    low, high = report["gates"][gate]
    assert 0.0 < low <= high < 1.0
  assert -1.0 < report["gates"]["g"][0] <= report["gates"]["g"][1] < 1.0


def check_vmap_grad_recipes(report, printed):
  assert report["losses_shape"] == [3, 6]
  assert len(report["rate_accuracy"]) == 3 and all(0.0 <= a <= 1.0 for a in report["rate_accuracy"])
  assert len(report["member_accuracy"]) == 3 and 0.0 <= report["ensemble_accuracy"] <= 1.0
  # The mean of the per-example gradients is the batch gradient.
  assert report["grad_check"] < 1e-5
  assert len(report["norms"]) == 16 and all(finite(n) and n > 0 for n in report["norms"])
  assert report["saliency_shape"] == [8, 28, 28]
  check_sweep(report["sweep"], report["sweep_evals"], report, printed)


def check_sweep(summary, evals, report, printed):
  """The fnets sweep of section 1: 2 rates × 3 seeds of mlp_mnist, 2 epochs of 4 steps (the mock's 64 train
  images in batches of 16; its validation split also has 64), its validation curves, and the point chosen on them."""
  assert [(p["values"], p["members"], p["seeds"]) for p in summary["points"]] == [
      ({"learning_rate": 0.01}, [0, 1, 2], [0, 1, 2]), ({"learning_rate": 0.5}, [3, 4, 5], [0, 1, 2])]
  assert sorted((r["member"], r["step"]) for r in evals) == [(k, step) for k in range(6) for step in (4, 8)]
  curve = {(r["member"], r["step"]): r["accuracy"] for r in evals}
  # Drawn: each member's curve, then its point's mean (in that order per point), and one band per point.
  lines = report["sweep_lines"]
  assert len(lines) == 6 + 2 and report["sweep_bands"] == 2
  for i, point in enumerate(summary["points"]):
    drawn = lines[4 * i:4 * i + 4]
    assert drawn[:3] == [[curve[k, 4], curve[k, 8]] for k in point["members"]]
    assert drawn[3] == pytest.approx([np.mean([curve[k, s] for k in point["members"]]) for s in (4, 8)], abs=1e-12)
  # The statistics of the last evaluation, recomputed from metrics.jsonl: mean, std and Student's t interval.
  t_975 = scipy_stats.t.ppf(0.975, 2)  # (3 seeds: 2 degrees of freedom)
  means = []
  for point in summary["points"]:
    final = [curve[k, 8] for k in point["members"]]
    stats = point["validation"]["accuracy"]
    std = np.std(final, ddof=1)
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(np.mean(final), abs=1e-12)
    assert stats["std"] == pytest.approx(std, abs=1e-12)
    assert stats["ci95"] >= 0 and stats["ci95"] == pytest.approx(t_975 * std / math.sqrt(3), abs=1e-12)
    means.append(np.mean(final))
  # The point with the best mean validation accuracy is chosen (the first of a tie), and only its members tested.
  assert summary["chosen"] == int(np.argmax(means)) and summary["metric"] == "accuracy"
  test = summary["test"]["accuracy"]
  assert test["n"] == 3 and 0.0 <= test["mean"] <= 1.0 and test["ci95"] >= 0
  assert "sweep: 2 point(s)" in printed and f"chosen on validation: {summary['points'][summary['chosen']]['values']}" \
      in printed


def check_vanishing_gradients(report, printed):
  T = 110
  for stage in ("init", "trained"):
    for cell in ("lstm", "rnn"):
      flow = report["flow"][cell][stage]  # ‖∂L/∂h_t‖, t = 0..T-1
      assert len(flow) == T and all(finite(f) and f > 0 for f in flow)
      assert report["ratio"][cell][stage] == pytest.approx(flow[T - 1 - 100] / flow[T - 1], rel=1e-9)
    ratio = report["ratio"]["lstm"][stage] / report["ratio"]["rnn"][stage]
    assert finite(ratio) and report["lstm_to_rnn"][stage] == pytest.approx(ratio, rel=1e-9)
  # The table the notebook prints: LSTM, RNN and LSTM:RNN at 100 steps back, at init and after training.
  rows = [line.split()[-3:] for line in printed.splitlines()
          if line.startswith(("at initialisation", "after 4 steps"))]
  assert [[float(x) for x in row] for row in rows] == [
      pytest.approx([report["ratio"]["lstm"][stage], report["ratio"]["rnn"][stage], report["lstm_to_rnn"][stage]],
                    rel=2e-3) for stage in ("init", "trained")]
  assert all(finite(report["val_loss"][cell]) for cell in ("lstm", "rnn"))


@pytest.mark.parametrize("name", list(NOTEBOOK_CASES))
def test_notebook_runs_and_draws_its_figures(name, executed):
  if isinstance(executed[name], BaseException):
    raise executed[name]
  cells, report = executed[name]
  assert figures(cells) >= NOTEBOOK_CASES[name]["figures"]
  printed = "".join(output.get("text", "") for cell in cells for output in cell.get("outputs", [])
                    if output.get("name") == "stdout")
  globals()[f"check_{name}"](report, printed)
  if name == "quickstart":  # fnets' progress lines reach the notebook while it trains
    logged = "".join(output.get("text", "") for cell in cells for output in cell.get("outputs", [])
                     if output.get("name") == "stderr")
    assert "[train] step 2/8" in logged and "[eval] step 4/8" in logged


def config_fields_set(source: str) -> set[str]:
  """The dotted names after `config.` that a notebook's code assigns ("num_steps", "model.hidden_size")."""
  fields = set()
  code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))  # (magics)
  for node in ast.walk(ast.parse(code)):
    for target in node.targets if isinstance(node, ast.Assign) else []:
      names = []
      while isinstance(target, ast.Attribute):
        names.insert(0, target.attr)
        target = target.value
      if isinstance(target, ast.Name) and target.id == "config" and names:
        fields.add(".".join(names))
  return fields


def test_notebooks_set_only_fields_their_experiments_have():
  # A ConfigDict takes a new field silently: a renamed field (warmup_epochs → warmup_steps) would be ignored.
  for name in NOTEBOOK_CASES:
    nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
    source = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    for experiment in re.findall(r"^from fnets\.experiments import (\w+)$", source, re.MULTILINE):
      config = importlib.import_module(f"fnets.experiments.{experiment}").get_config()
      for field in config_fields_set(source):
        node = config
        for part in field.split("."):
          assert part in node, f"{name} sets config.{field}, which {experiment}'s config has not"
          node = node[part]


def test_every_notebook_is_tested_and_opens_in_colab():
  names = sorted(f[:-len(".ipynb")] for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))
  assert names == sorted(NOTEBOOK_CASES)
  for name in names:
    nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
    nbformat.validate(nb)
    # How to open it in Colab, and the install cell (tests/test_notebook_install.py).
    assert "File → Upload notebook" in nb.cells[0].source and "FNETS_SOURCE" in nb.cells[0].source
    assert 'FNETS_SOURCE = ""  # @param {type:"string"}' in nb.cells[1].source
    settings_cell_index(nb)
    # Committed without outputs: small, and nothing from one machine's run.
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in nb.cells if cell.cell_type == "code")
