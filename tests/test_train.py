"""train_and_evaluate in-process: one seed controls the whole run."""

import json
import os

import jax
import numpy as np

from fnets.experiments import cnn_mnist
from fnets import config as config_lib
from fnets import loop
from fnets.tasks import classify


def run(tmp_path, name, *args):
  config = config_lib.override(cnn_mnist.get_config(), [
      "--config.batch_size=16", "--config.max_steps=4", "--config.log_every_steps=1", "--config.augment=true",
      "--config.model.conv_features=(4,8)", "--config.model.pool_after=(1,)", "--config.model.dense_features=(16,)", *args])
  workdir = str(tmp_path / name)
  test = loop.train_and_evaluate(config, workdir)["test"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    losses = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
  return test, losses


def test_same_seed_same_run_other_seed_other_run(mock_tfds, tmp_path):
  a = run(tmp_path, "a", "--config.seed=1")
  assert a == run(tmp_path, "b", "--config.seed=1")
  assert a[1] != run(tmp_path, "c", "--config.seed=2")[1]


def test_training_fits_a_small_set(mock_tfds, tmp_path):
  # 64 random mock examples: enough steps at a high rate must drive the training loss down.
  _, losses = run(tmp_path, "fit", "--config.num_epochs=100", "--config.max_steps=40", "--config.augment=false", "--config.schedule=constant",
                  "--config.optimizer=adam", "--config.learning_rate=0.003", "--config.model.dropout=0.0",
                  "--config.model.dense_features=(128,)")
  assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_cifar_recipe_freezes_whitening_and_resumes_exactly(mock_tfds, tmp_path):
  """cnn_cifar's recipe (whitening, lookahead, bias rate, alternating flip, TTA) at small widths: the whitening
  kernel is that of the training images' patches and never moves, its bias stops after whiten_bias_epochs, and a
  run resumed from a mid-run checkpoint ends with the same weights and test metrics."""
  import shutil

  from fnets.experiments import cnn_cifar
  from fnets.data import images
  from fnets.models import cnn
  from test_loop import final_params_at
  config = config_lib.override(cnn_cifar.get_config(), [
      "--config.batch_size=16", "--config.num_epochs=2", "--config.model.conv_features=(4,4,8,8,8,8)",
      "--config.whiten_bias_epochs=1.0", "--config.lookahead_every=2", "--config.lookahead_start_epochs=0.5",
      "--config.checkpoint_every_steps=3", "--config.keep_checkpoints=5", "--config.log_every_steps=4",
      "--config.eval_batch_size=32", "--config.tta=flip"])  # 64 mock images: 4 steps an epoch, 8 steps
  workdir = str(tmp_path / "recipe")
  first = loop.train_and_evaluate(config, workdir)
  params = {step: final_params_at(workdir, step) for step in (3, 6, 8)}
  data = images.load("cifar10", validation_percent=0)
  whiten = cnn.patch_whitening((data.train.images_NHWC - data.mean_C) / data.std_C, 2)
  np.testing.assert_allclose(params[3]["Whiten"]["kernel"], whiten, rtol=1e-5)
  for p in params.values():
    np.testing.assert_array_equal(p["Whiten"]["kernel"], params[3]["Whiten"]["kernel"])
  assert np.any(params[3]["Whiten"]["bias"])  # (starts at 0) trains, then is frozen after step 4:
  np.testing.assert_array_equal(params[6]["Whiten"]["bias"], params[8]["Whiten"]["bias"])
  for step in (6, 8):
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  assert loop.train_and_evaluate(config, workdir) == first
  for a, b in zip(jax.tree.leaves(final_params_at(workdir, 8)), jax.tree.leaves(params[8])):
    np.testing.assert_array_equal(a, b)
