"""train_and_evaluate in-process: one seed controls the whole run."""

import json
import os

from experiments import cnn_mnist
from fnets import config as config_lib
from fnets import train


def run(tmp_path, name, *args):
  config = config_lib.override(cnn_mnist.get_config(), [
      "--config.batch_size=16", "--config.max_steps=4", "--config.log_every_steps=1", "--config.augment=true",
      "--config.model.conv_features=(4,8)", "--config.model.dense_features=(16,)", *args])
  workdir = str(tmp_path / name)
  test = train.train_and_evaluate(config, workdir)
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
