"""Sweeps: each member is the run it stands for; records, the result, resume, evaluation and export of a member."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from fnets import config as config_lib
from fnets import loop, runs, sweeps
from fnets.experiments import cnn_mnist, lstm_shakespeare
from test_launch import launch, read_metrics
from test_runs import crash_through_the_end, listing, popen, saved_steps, wait_for_checkpoint

SMALL_CNN = ["--config.batch_size=16", "--config.num_epochs=2", "--config.log_every_steps=2", "--config.augment=true",
             "--config.model.conv_features=(4,8)", "--config.model.pool_after=(1,)",
             "--config.model.dense_features=(16,)", "--config.eval_batch_size=32"]
# Every value-like field swept at once (one value each, but as arrays in the step), and two with two values.
EVERY_FIELD = ["--config.sweep.label_smoothing=(0.1,)", "--config.sweep.warmup_epochs=(0.5,)",
               "--config.sweep.weight_decay=(1e-3,)", "--config.sweep.grad_clip_norm=(0.5,)",
               "--config.sweep.model.dropout=(0.3,)", "--config.sweep.lr_end_fraction=(0.1,)",
               "--config.sweep.lr_start_fraction=(0.2,)"]


def final_state(workdir):
  import orbax.checkpoint as ocp
  step = max(saved_steps(workdir))
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.join(workdir, "checkpoints", str(step), "default"))


def assert_member_is_run(sweep_dir, k, single_dir, eval_keys):
  """Member k's validation records and final parameters are those of the single run, to float32 rounding."""
  member = [r for r in read_metrics(sweep_dir) if r["split"] == "eval" and r["member"] == k]
  single = [r for r in read_metrics(single_dir) if r["split"] == "eval"]
  assert [r["step"] for r in member] == [r["step"] for r in single] and single
  for a, b in zip(member, single):
    for key in eval_keys:
      np.testing.assert_allclose(a[key], b[key], rtol=2e-5, atol=1e-6)
  stacked, one = final_state(sweep_dir)["params"], final_state(single_dir)["params"]
  for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(one), strict=True):
    np.testing.assert_allclose(a[k], b, rtol=1e-4, atol=1e-5)


def test_classifier_member_is_the_run_of_its_seed_and_values(mock_tfds, tmp_path):
  config = config_lib.override(cnn_mnist.get_config(), SMALL_CNN)
  swept = config_lib.override(config, [*EVERY_FIELD, "--config.sweep.learning_rate=(0.05,0.2)",
                                       "--config.sweep.momentum=(0.0,0.9)", "--config.sweep.seed=(1,2)"])
  out = loop.train_and_evaluate(swept, str(tmp_path / "sweep"))
  members = sweeps.members(swept)
  assert len(members) == 8 and len(out["eval"]) == 8
  for k in (0, 7):  # momentum 0 (traced: a momentum of 0, not none) and 0.9; both learning rates and seeds
    single = sweeps.point_config(swept, members[k])
    assert single.momentum == members[k]["momentum"] and not sweeps.fields(single)
    loop.train_and_evaluate(single, str(tmp_path / f"single{k}"))
    assert_member_is_run(str(tmp_path / "sweep"), k, str(tmp_path / f"single{k}"), ("loss", "accuracy"))


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_language_model_member_is_the_run_of_its_seed_and_values(cell, tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / "text.txt").write_text("".join(rng.choice(list("abcdefgh \n"), 6000)))
  config = config_lib.override(lstm_shakespeare.get_config(), [
      f"--config.dataset=text:{tmp_path / 'text.txt'}", "--config.batch_size=4", "--config.seq_len=16",
      "--config.num_steps=6", "--config.eval_every_steps=3", "--config.model.hidden_size=16",
      "--config.model.embed_dim=8", "--config.model.num_layers=2", "--config.eval_streams=4",
      "--config.log_every_steps=3", f"--config.model.cell={cell}", "--config.warmup_steps=2"])
  swept = config_lib.override(config, ["--config.sweep.learning_rate=(0.002,0.01)", "--config.sweep.seed=(0,1)",
                                       "--config.sweep.model.dropout=(0.0,0.2)",  # (inside the stack too)
                                       "--config.sweep.grad_clip_norm=(0.0,)", "--config.sweep.warmup_steps=(3,)"])
  summary = loop.train_and_evaluate(swept, str(tmp_path / "sweep"))["sweep"]
  members = sweeps.members(swept)
  chosen = summary["points"][summary["chosen"]]["members"][0]  # its sample is the sweep's (0, 2, 4 or 6)
  for k in (chosen, 7):
    loop.train_and_evaluate(sweeps.point_config(swept, members[k]), str(tmp_path / f"single{k}"))
    assert_member_is_run(str(tmp_path / "sweep"), k, str(tmp_path / f"single{k}"), ("loss",))
  assert (tmp_path / "sweep" / "sample.txt").read_text() == (tmp_path / f"single{chosen}" / "sample.txt").read_text()


SWEEP_RUN = ["--experiment=cnn_mnist", "--config.batch_size=8", "--config.num_epochs=5", "--config.log_every_steps=5",
             "--config.checkpoint_every_steps=10", "--config.model.conv_features=(4,8)",
             "--config.model.pool_after=(1,)", "--config.model.dense_features=(16,)", "--config.augment=true",
             "--config.eval_batch_size=32", "--config.sweep.seed=(0,1)", "--config.sweep.learning_rate=(0.05,0.1)"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
  """SWEEP_RUN to its end (2 learning rates × 2 seeds): the run whose records are checked, and the uninterrupted
  reference of the killed one. Its console output is in ../stderr.txt."""
  workdir = tmp_path_factory.mktemp("sweep") / "run"
  proc = launch(*SWEEP_RUN, f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  (workdir.parent / "stderr.txt").write_text(proc.stderr)
  return str(workdir)


def test_records_the_result_chosen_on_validation_and_test_of_that_point_only(mock_tfds, finished_sweep):
  workdir = finished_sweep
  records = read_metrics(workdir)
  last = max(r["step"] for r in records)
  evals = [r for r in records if r["split"] == "eval" and r["step"] == last]
  assert [r["member"] for r in evals] == list(range(4))
  assert [r["sweep"] for r in evals] == [{"learning_rate": lr, "seed": s} for lr in (0.05, 0.1) for s in (0, 1)]
  train = [r for r in records if r["split"] == "train" and r["step"] == last]
  assert len(train) == 4 and len({r["loss"] for r in train}) == 4  # each member's own loss
  summary = json.load(open(os.path.join(workdir, "sweep.json")))
  means = [np.mean([r["accuracy"] for r in evals[2 * p:2 * p + 2]]) for p in range(2)]
  assert summary["chosen"] == int(np.argmax(means))
  point = summary["points"][summary["chosen"]]
  np.testing.assert_allclose(point["validation"]["accuracy"]["mean"], max(means))
  test = [r for r in records if r["split"] == "test"]
  assert [r["member"] for r in test] == point["members"]  # no other point's test split was evaluated
  assert summary["test"]["accuracy"]["n"] == 2
  np.testing.assert_allclose(summary["test"]["accuracy"]["mean"], np.mean([r["accuracy"] for r in test]))
  stderr = open(os.path.join(os.path.dirname(workdir), "stderr.txt")).read()
  assert "sweep: 2 point(s)" in stderr and "test of the chosen point" in stderr

  # One member: evaluated, and exported as an ordinary run's weights.
  member = point["members"][1]
  proc = launch(f"--workdir={workdir}", "--mode=eval", f"--member={member}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  evaluated = json.load(open(os.path.join(workdir, "eval.json")))
  assert evaluated["member"] == member and isinstance(evaluated["test"]["accuracy"], float)
  proc = launch(f"--workdir={workdir}", "--mode=export", f"--member={member}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  exported = np.load(os.path.join(workdir, "export", "params.npz"))
  best = runs.Checkpoints(workdir, 1, "accuracy", "max")
  stacked = best.restore(final_state(workdir), best=True)
  best.close()
  np.testing.assert_array_equal(exported["params/Dense_0/kernel"], stacked["params"]["Dense_0"]["kernel"][member])
  assert exported["params/Dense_0/kernel"].ndim == 2
  for args, message in ((["--mode=export"], "export one with --member=K"),
                        (["--mode=eval", "--member=4"], "has 4 members; give 0..3")):
    proc = launch(f"--workdir={workdir}", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_stats_are_the_t_interval():
  s = sweeps.stats([1.0, 2.0, 3.0, 4.0, 5.0])
  assert s["mean"] == 3.0 and s["n"] == 5
  np.testing.assert_allclose(s["std"], np.sqrt(2.5))
  np.testing.assert_allclose(s["ci95"], 2.7764451 * np.sqrt(2.5) / np.sqrt(5), rtol=1e-6)  # t(0.975, 4)
  assert sweeps.stats([0.7])["ci95"] == 0.0


def test_killed_sweep_resumes_bitwise(finished_sweep, tmp_path):
  reference = finished_sweep
  workdir = str(tmp_path / "killed")
  proc = popen(workdir, tmp_path / "log.txt", SWEEP_RUN)
  wait_for_checkpoint(workdir, proc, min_step=20)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert saved_steps(workdir)[-1] < 40
  resumed = launch(*SWEEP_RUN, f"--workdir={workdir}")
  assert resumed.returncode == 0 and "resumed at step" in resumed.stderr, resumed.stderr[-3000:]
  strip = lambda records: [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in records]
  assert strip(read_metrics(workdir)) == strip(read_metrics(reference))
  for a, b in zip(jax.tree.leaves(final_state(workdir)), jax.tree.leaves(final_state(reference)), strict=True):
    assert np.array_equal(a, b)
  assert json.load(open(os.path.join(workdir, "sweep.json"))) == json.load(open(os.path.join(reference, "sweep.json")))


def test_a_sweep_killed_at_each_point_of_its_last_stage_ends_as_one_never_killed(finished_sweep, tmp_path):
  workdir = str(tmp_path / "crashed")
  last = max(r["step"] for r in read_metrics(finished_sweep))
  crash_through_the_end(SWEEP_RUN, workdir, last)
  strip = lambda records: [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in records]
  assert strip(read_metrics(workdir)) == strip(read_metrics(finished_sweep))
  assert json.load(open(os.path.join(workdir, "sweep.json"))) == json.load(open(os.path.join(finished_sweep,
                                                                                              "sweep.json")))
  assert listing(os.path.join(workdir, "best")) == listing(os.path.join(finished_sweep, "best"))
  for a, b in zip(jax.tree.leaves(final_state(workdir)), jax.tree.leaves(final_state(finished_sweep)), strict=True):
    assert np.array_equal(a, b)


def test_chunk_size_from_the_compiled_steps_memory():
  from types import SimpleNamespace

  from fnets import parallel
  from fnets.errors import ConfigError

  class Step:  # what members_per_chunk reads of a jitted step: its compiled memory analysis
    def lower(self, *args):
      analysis = SimpleNamespace(argument_size_in_bytes=1000, output_size_in_bytes=1000, alias_size_in_bytes=900,
                                 temp_size_in_bytes=8 * 500)  # 8 members, 500 bytes each
      return SimpleNamespace(compile=lambda: SimpleNamespace(memory_analysis=lambda: analysis))

  assert parallel.members_per_chunk(Step(), (), 8, budget=1100 + 4000) == 8
  assert parallel.members_per_chunk(Step(), (), 8, budget=1100 + 3 * 500 + 10) == 2  # (a divisor of 8)
  # On a CPU: members whose temporaries outweigh their state, as many as fit the cache (if at least 2).
  assert parallel.members_per_chunk(Step(), (), 8, budget=10**9, cache=1000) == 2
  assert parallel.members_per_chunk(Step(), (), 8, budget=10**9, cache=999) == 8
  with pytest.raises(ConfigError, match=r"the sweep's 8 members need 0.00 GiB per device even one at a time"):
    parallel.members_per_chunk(Step(), (), 8, budget=1100 + 499)


def test_chunked_sweep_trains_as_the_whole_sweep(mock_tfds, tmp_path, monkeypatch, capsys):
  from fnets import parallel
  swept = config_lib.override(cnn_mnist.get_config(), [*SMALL_CNN, "--config.max_steps=4",
                                                       "--config.sweep.seed=(0,1,2,3)"])
  whole = loop.train_and_evaluate(swept, str(tmp_path / "whole"))["eval"]
  monkeypatch.setattr(parallel, "members_per_chunk", lambda *args, **kwargs: 2)
  chunked = loop.train_and_evaluate(swept, str(tmp_path / "chunked"))["eval"]
  assert "a sweep of 4 members, 2 at a time" in capsys.readouterr().err
  for a, b in zip(whole, chunked, strict=True):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-5)
    assert a["accuracy"] == b["accuracy"]


def test_one_compiled_step_serves_every_value(mock_tfds):
  """The swept values are arguments of the step, not constants in it: sweeps of other values (of the same grid
  shape) lower to the same program, so the compile cache serves them."""
  from fnets.tasks import classify
  programs = []
  for rates, momenta in (("(0.01,0.1)", "(0.5,)"), ("(0.2,0.3)", "(0.9,)")):
    config = config_lib.override(cnn_mnist.get_config(), [*SMALL_CNN, f"--config.sweep.learning_rate={rates}",
                                                           f"--config.sweep.momentum={momenta}"])
    task = classify.setup(config)
    programs.append(task.context["train_jit"].lower(*task.context["train_args"](task.state, 0)).as_text())
  assert programs[0] == programs[1]
