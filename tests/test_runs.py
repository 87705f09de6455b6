"""Runs survive being killed, resume bitwise, refuse mixing configs, stop on NaN, and evaluate checkpoints."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT
from test_launch import launch, read_metrics

# A tiny CNN on 64 mock MNIST examples: 8 steps an epoch, 12 epochs, a checkpoint every 10 steps.
TINY = ["--experiment=cnn_mnist", "--config.batch_size=8", "--config.num_epochs=12", "--config.log_every_steps=5",
        "--config.checkpoint_every_steps=10", "--config.model.conv_features=(4,8)", "--config.model.pool_after=(1,)", "--config.model.dense_features=(16,)",
        "--config.augment=true", "--config.eval_batch_size=32"]
TOTAL_STEPS = 96


def popen(workdir, log_path, args=TINY):
  """Starts a run in the background, its output to a file (a pipe nobody reads would block it)."""
  env = {**os.environ, "PYTHONPATH": ROOT}
  log = open(log_path, "w")
  return subprocess.Popen([sys.executable, os.path.join("tests", "mocked_launch.py"), *args, f"--workdir={workdir}"],
                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def saved_steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []


def wait_for_checkpoint(workdir, proc, min_step, timeout=240):
  start = time.time()
  while not [s for s in saved_steps(workdir) if s >= min_step]:
    assert proc.poll() is None, "the run ended before it was stopped"
    assert time.time() - start < timeout
    time.sleep(0.02)


def final_params(workdir):
  path = os.path.join(workdir, "checkpoints", str(TOTAL_STEPS), "default")
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(path)


def eval_records(workdir):
  """(step, split, loss, accuracy) of the eval and test records (accuracy None for the language models)."""
  return [(r["step"], r["split"], r["loss"], r.get("accuracy")) for r in read_metrics(workdir)
          if r["split"] != "train"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("runs") / "uninterrupted")
  proc = launch(*TINY, f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def assert_same_run(workdir, reference):
  assert eval_records(workdir) == eval_records(reference)
  a, b = final_params(workdir), final_params(reference)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.array_equal(x, y)  # bitwise


def test_killed_run_resumes_bitwise(uninterrupted, tmp_path):
  workdir = str(tmp_path / "killed")
  proc = popen(workdir, tmp_path / "log.txt")
  wait_for_checkpoint(workdir, proc, min_step=40)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert saved_steps(workdir)[-1] < TOTAL_STEPS
  resumed = launch(*TINY, f"--workdir={workdir}")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed at step" in resumed.stderr
  assert_same_run(workdir, uninterrupted)
  assert len(json.load(open(os.path.join(workdir, "run.json")))) == 2  # one record per start


# Points of a run's last stage (runs.crash_point), in their order. A start killed at the first resumes without the
# best save of its last step; it makes it, so the next resumes from the state a kill right after the best save
# (after_best_save) leaves, and is killed after the test records, which the last start writes again.
END_STAGE = ("after_latest_save:{last}", "after_test")


def crash_through_the_end(args, workdir, last):
  """Runs `args` killed (SIGKILL, FNETS_CRASH_AT) at each point of END_STAGE in turn, each start resuming the one
  before, then once more to the end."""
  for point in END_STAGE:
    proc = launch(*args, f"--workdir={workdir}", env={"FNETS_CRASH_AT": point.format(last=last)})
    assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-3000:])
  proc = launch(*args, f"--workdir={workdir}")
  assert proc.returncode == 0 and f"resumed at step {last}" in proc.stderr, proc.stderr[-3000:]


def listing(directory):
  return sorted(os.listdir(directory))


def test_a_run_killed_at_each_point_of_its_last_stage_ends_as_one_never_killed(uninterrupted, tmp_path):
  workdir = str(tmp_path / "crashed")
  crash_through_the_end(TINY, workdir, TOTAL_STEPS)
  assert_same_run(workdir, uninterrupted)  # eval, test and test_best records; final parameters, bitwise
  assert listing(os.path.join(workdir, "best")) == listing(os.path.join(uninterrupted, "best"))


def test_checking_a_new_workdir_creates_nothing(tmp_path, monkeypatch):
  """Every process of a multi-process run checks the same new workdir at once: the check creates nothing (a trial
  mkdir and rmdir made one process see the other's directory, or lose it, and die)."""
  from fnets import runs
  monkeypatch.setattr(runs.os, "mkdir", lambda *a, **k: pytest.fail("the check created a directory"))
  runs._check_creatable(str(tmp_path / "new" / "run"))
  assert os.listdir(tmp_path) == []
  (tmp_path / "a_file").write_text("")
  with pytest.raises(runs.RunError, match="is a file, not a directory"):
    runs._check_creatable(str(tmp_path / "a_file" / "run"))
  with pytest.raises(runs.RunError, match=r"cannot be created \(File name too long: "):
    runs._check_creatable(str(tmp_path / ("x" * 300) / "run"))


def test_sigterm_saves_then_the_same_command_resumes(uninterrupted, tmp_path):
  workdir = str(tmp_path / "preempted")
  proc = popen(workdir, tmp_path / "log.txt")
  wait_for_checkpoint(workdir, proc, min_step=20)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=120)
  stderr = (tmp_path / "log.txt").read_text()
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  line = [l for l in stderr.splitlines() if "stopped by SIGTERM at step" in l][0]
  step = int(line.split("at step ")[1].split(":")[0])
  assert "checkpoint saved" in line and "run the same command to resume" in line
  assert step in saved_steps(workdir) and step < TOTAL_STEPS
  resumed = launch(*TINY, f"--workdir={workdir}")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert_same_run(workdir, uninterrupted)


def test_eval_mode_restores_the_best_checkpoint(uninterrupted):
  """--mode=eval evaluates the checkpoint that validation picked, with the run's own config (none need be given);
  its test metrics are those of the run's "test_best" record."""
  for args in ([*TINY, f"--workdir={uninterrupted}", "--mode=eval"], [f"--workdir={uninterrupted}", "--mode=eval"]):
    proc = launch(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(os.path.join(uninterrupted, "eval.json")))
    evals = [r for r in read_metrics(uninterrupted) if r["split"] == "eval"]
    best = max(evals, key=lambda r: r["accuracy"])
    assert result["validation"]["accuracy"] == best["accuracy"]
    assert result["checkpoint_step"] in [r["step"] for r in evals if r["accuracy"] == best["accuracy"]]
    (test_best,) = [r for r in read_metrics(uninterrupted) if r["split"] == "test_best"]
    assert result["test"]["accuracy"] == test_best["accuracy"] and result["checkpoint_step"] == test_best["best_step"]
  proc = launch(f"--workdir={uninterrupted}", "--mode=export")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "params/Conv_0/kernel" in np.load(os.path.join(uninterrupted, "export", "params.npz"))


def test_changed_config_is_refused_unless_fresh(uninterrupted, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(uninterrupted, workdir)
  before = open(os.path.join(workdir, "metrics.jsonl")).read()
  proc = launch(*TINY, f"--workdir={workdir}", "--config.max_steps=3", "--config.learning_rate=0.2")
  assert proc.returncode != 0
  assert "holds a run with another config" in proc.stderr
  assert "learning_rate: recorded 0.1, now 0.2" in proc.stderr and "--fresh" in proc.stderr
  assert "Traceback" not in proc.stderr and proc.returncode == 2
  assert open(os.path.join(workdir, "metrics.jsonl")).read() == before  # nothing touched
  proc = launch(*TINY, f"--workdir={workdir}", "--config.max_steps=3", "--config.learning_rate=0.2", "--fresh")
  assert proc.returncode == 0, proc.stderr[-3000:]
  (old,) = [d for d in os.listdir(tmp_path) if d.startswith("run.old-")]
  assert open(os.path.join(tmp_path, old, "metrics.jsonl")).read() == before  # moved aside, not deleted
  assert json.load(open(os.path.join(workdir, "config.json")))["learning_rate"] == 0.2


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "nan")
  proc = launch(*TINY, f"--workdir={workdir}", "--config.learning_rate=1e30", "--config.checkpoint_every_steps=1",
                "--config.log_every_steps=1", "--config.model.batch_norm=false")
  assert proc.returncode != 0
  line = [l for l in proc.stderr.splitlines() if "the training loss is" in l][0]
  bad_step = int(line.split(" at step ")[1].split(";")[0])
  assert "keeps its last good checkpoint" in line
  assert saved_steps(workdir) and max(saved_steps(workdir)) == bad_step - 1
  assert "Traceback" not in proc.stderr


def test_corrupted_checkpoint_is_a_clear_error_and_left_alone(uninterrupted, tmp_path):
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(uninterrupted, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(TOTAL_STEPS)))  # the latest is now step 90, unfinished
  data_dir = os.path.join(workdir, "checkpoints", "90", "default", "ocdbt.process_0", "d")
  for name in os.listdir(data_dir):
    with open(os.path.join(data_dir, name), "r+b") as f:
      f.write(b"garbage" * 10)
  digest = lambda: sorted(hashlib.md5(open(os.path.join(r, n), "rb").read()).hexdigest()
                          for r, _, files in os.walk(os.path.join(workdir, "checkpoints")) for n in files)
  before = digest()
  proc = launch(*TINY, f"--workdir={workdir}")
  assert proc.returncode != 0
  assert "checkpoints/90 cannot be restored" in proc.stderr and "It was left as it is" in proc.stderr
  assert digest() == before


def test_a_smoke_run_continues_into_the_full_run(uninterrupted, tmp_path):
  """max_steps (like the logging and checkpoint cadence) does not change a run's result: a run started with it
  continues, in the same workdir, to the same end as the run that never stopped."""
  workdir = str(tmp_path / "smoke")
  assert launch(*TINY, f"--workdir={workdir}", "--config.max_steps=20").returncode == 0
  proc = launch(*TINY, f"--workdir={workdir}", "--config.log_every_steps=5")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed at step 20" in proc.stderr
  # The same training and evaluations, and the smoke run's own evaluation at its last step, 20, in addition.
  records, expected = eval_records(workdir), eval_records(uninterrupted)
  assert [r for r in records if r[:2] != (20, "eval") and r[1] != "test_best"] == [
      r for r in expected if r[1] != "test_best"]
  for x, y in zip(jax.tree.leaves(final_params(workdir)), jax.tree.leaves(final_params(uninterrupted))):
    assert np.array_equal(x, y)
  assert json.load(open(os.path.join(workdir, "config.json")))["max_steps"] == 0  # the latest start's config
