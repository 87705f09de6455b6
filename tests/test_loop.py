"""The loop in-process: a language model and a stopped run resume to the same result, the test split is read only
for the final records, a checkpoint of other shapes is refused. (test_runs.py runs launch.py end to end.)"""

import os
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from test_launch import read_metrics
from test_runs import eval_records, saved_steps


def test_checkpoint_of_other_shapes_is_a_clear_error(tmp_path):
  from fnets import runs
  checkpoints = runs.Checkpoints(str(tmp_path), keep=2, best_metric="accuracy", best_mode="max")
  checkpoints.save(1, {"w": np.ones((3, 4), np.float32)})
  with pytest.raises(runs.RunError, match="cannot be restored"):
    checkpoints.restore({"w": np.ones((5, 4), np.float32)})
  np.testing.assert_array_equal(checkpoints.restore({"w": np.zeros((3, 4), np.float32)})["w"], np.ones((3, 4)))
  checkpoints.close()


def test_language_model_resumes_to_the_same_result(mock_tfds, monkeypatch, tmp_path):
  """A finished LM run with its last checkpoints removed resumes from an earlier one and ends identically; so does
  one stopped at an evaluation step, which evaluates once."""
  import shutil

  from fnets.experiments import lstm_shakespeare
  from fnets import config as config_lib
  from fnets import loop, runs
  from fnets.tasks import char_lm
  config = config_lib.override(lstm_shakespeare.get_config(), [
      "--config.num_steps=8", "--config.batch_size=4", "--config.seq_len=16", "--config.eval_every_steps=4",
      "--config.checkpoint_every_steps=2", "--config.log_every_steps=2", "--config.model.hidden_size=16",
      "--config.eval_streams=4", "--config.sample_prompt=a", "--config.sample_length=10"])
  workdir = str(tmp_path / "lm")
  first = loop.train_and_evaluate(config, workdir)
  params_at_8 = final_params_at(workdir, 8)
  for step in (6, 8):
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  assert saved_steps(workdir) == [4]
  assert loop.train_and_evaluate(config, workdir) == first
  for a, b in zip(jax.tree.leaves(final_params_at(workdir, 8)), jax.tree.leaves(params_at_8)):
    assert np.array_equal(a, b)
  assert [(r[0], r[1]) for r in eval_records(workdir)] == [(4, "eval"), (8, "eval"), (8, "test"), (8, "test_best")]

  # Fine-tuning from this run with another batch size: the weights come over, the carried state starts afresh.
  other = char_lm.setup(config_lib.override(config, ["--config.batch_size=2"])).state
  params, model_state = runs.restore_weights(workdir, other)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_at_8)):
    assert np.array_equal(a, b)
  assert [np.shape(c) for c in jax.tree.leaves(model_state["carry"])] == [(1, 2, 16)] * 2
  assert not any(np.any(c) for c in jax.tree.leaves(model_state["carry"]))
  with pytest.raises(config_lib.ConfigError, match="--config.batch_size=100000 streams of --config.seq_len=16"):
    char_lm.setup(config_lib.override(config, ["--config.batch_size=100000"]))

  stopped = str(tmp_path / "stopped")
  with monkeypatch.context() as patch:
    sigterm_during_step(patch, char_lm, stop_step=4)
    with pytest.raises(runs.Preempted, match="at step 4$"):
      loop.train_and_evaluate(config, stopped)
  assert loop.train_and_evaluate(config, stopped) == first
  assert eval_records(stopped) == eval_records(workdir)


def final_params_at(workdir, step):
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.join(workdir, "checkpoints", str(step), "default"))["params"]


def sigterm_during_step(monkeypatch, module, stop_step):
  """Makes the next run of `module`'s task send itself SIGTERM from inside training step `stop_step`, as a
  preemption at exactly that step would (the run's own handler catches it)."""
  import dataclasses
  setup = module.setup

  def setup_then_stop(config, **kwargs):
    task = setup(config, **kwargs)

    def train_step_then_stop(state, step):
      out = task.train_step(state, step)
      if step + 1 == stop_step:
        os.kill(os.getpid(), signal.SIGTERM)
      return out
    return dataclasses.replace(task, train_step=train_step_then_stop)
  monkeypatch.setattr(module, "setup", setup_then_stop)


def test_stop_at_any_step_neither_skips_nor_repeats_an_evaluation(mock_tfds, monkeypatch, tmp_path):
  from fnets.experiments import cnn_mnist
  from fnets import config as config_lib
  from fnets import loop, runs
  from fnets.tasks import classify
  config = config_lib.override(cnn_mnist.get_config(), [  # 64 mock examples: 4 steps an epoch, 3 epochs
      "--config.batch_size=16", "--config.num_epochs=3", "--config.checkpoint_every_steps=3",
      "--config.model.conv_features=(4,)", "--config.model.pool_after=(0,)",
      "--config.model.dense_features=(8,)"])
  loop.train_and_evaluate(config, str(tmp_path / "uninterrupted"))
  expected = eval_records(str(tmp_path / "uninterrupted"))
  assert [r[0] for r in expected] == [4, 8, 12, 12, 12]  # an evaluation after each epoch, then the two tests
  for stop_step in (4, 6):  # the end of epoch 1 (where it evaluates), the middle of epoch 2
    workdir = str(tmp_path / f"stopped_at_{stop_step}")
    with monkeypatch.context() as patch:
      sigterm_during_step(patch, classify, stop_step)
      with pytest.raises(runs.Preempted, match=f"at step {stop_step}$"):
        loop.train_and_evaluate(config, workdir)
    assert saved_steps(workdir)[-1] == stop_step
    loop.train_and_evaluate(config, workdir)
    assert eval_records(workdir) == expected, stop_step


def test_the_test_split_is_read_only_for_the_final_records(mock_tfds, monkeypatch, tmp_path):
  """Training, per-epoch evaluation and the best checkpoint never see the test split: the data source fails if
  the test split is opened before the last evaluation on validation has been written."""
  from fnets.experiments import cnn_mnist
  from fnets import config as config_lib
  from fnets import loop
  from fnets.data import tfds_source
  workdir = str(tmp_path / "run")
  opened, real = [], tfds_source.open_source

  def open_source(name, data_dir, splits, features):
    if "test" in splits:
      records = read_metrics(workdir)
      assert [r["step"] for r in records if r["split"] == "eval"] == [4, 8]  # every evaluation done
      assert not [r for r in records if r["split"].startswith("test")]
    opened.append(splits)
    return real(name, data_dir, splits, features)

  monkeypatch.setattr(tfds_source, "open_source", open_source)
  config = config_lib.override(cnn_mnist.get_config(), [
      "--config.batch_size=16", "--config.num_epochs=2", "--config.model.conv_features=(4,)",
            "--config.model.pool_after=(0,)"])
  result = loop.train_and_evaluate(config, workdir)
  assert opened == [("train[:90%]", "train[90%:]"), ("test",)]
  assert [(r["step"], r["split"]) for r in read_metrics(workdir) if r["split"] != "train"] == [
      (4, "eval"), (8, "eval"), (8, "test"), (8, "test_best")]
  assert result["test"]["num_examples"] == 64 and result["test_best"]["best_step"] in (4, 8)
