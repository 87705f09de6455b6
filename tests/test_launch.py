"""launch.py end to end, in subprocesses, as a user runs it."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

SMOKE = ["--config.batch_size=16", "--config.eval_batch_size=24", "--config.max_steps=3",
         "--config.log_every_steps=1"]


def launch(*args, offline=False, real=False, timeout=300):
  env = {**os.environ, "PYTHONPATH": ROOT}
  if offline:
    env["FNETS_OFFLINE"] = "1"
  script = "launch.py" if real else os.path.join("tests", "mocked_launch.py")
  return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("experiment", ["cnn_cifar", "cnn_mnist", "mlp_mnist", "lstm_mnist"])
def test_experiment_end_to_end(experiment, tmp_path):
  workdir = str(tmp_path / experiment)
  proc = launch(f"--experiment={experiment}", f"--workdir={workdir}", *SMOKE)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = read_metrics(workdir)
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3]
  for r in train:
    assert {"loss", "accuracy", "learning_rate", "examples_per_sec"} <= set(r)
  (test,) = [r for r in records if r["split"] == "test"]
  assert test["num_examples"] == 64  # every mock test example once, though 64 is not a multiple of 24
  assert 0.0 <= test["accuracy"] <= 1.0
  assert [r["split"] for r in records].count("eval") == 1
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["max_steps"] == 3 and config["batch_size"] == 16
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
  assert "[train] step 3/3" in proc.stderr  # console progress


@pytest.mark.parametrize("experiment", ["lstm_shakespeare", "rnn_shakespeare"])
def test_language_model_end_to_end(experiment, tmp_path):
  workdir = str(tmp_path / experiment)
  proc = launch(f"--experiment={experiment}", f"--workdir={workdir}", "--config.max_steps=4", "--config.batch_size=4",
                "--config.seq_len=16", "--config.eval_every_steps=2", "--config.log_every_steps=2",
                "--config.model.hidden_size=32", "--config.model.num_layers=2", "--config.eval_streams=8",
                "--config.sample_prompt=a", "--config.sample_length=30")
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = read_metrics(workdir)
  assert [(r["step"], r["split"]) for r in records] == [
      (2, "train"), (2, "eval"), (4, "train"), (4, "eval"), (4, "test")]
  for r in records[1:]:
    if r["split"] != "train":
      assert abs(r["bits_per_char"] - r["loss"] / np.log(2)) < 1e-6
  # The mock validation text is 64 examples concatenated; all but its first character are predicted.
  assert records[1]["num_chars"] == records[3]["num_chars"] > 100
  sample = open(os.path.join(workdir, "sample.txt")).read()
  assert sample.startswith("a") and len(sample.rstrip("\n")) == 31
  assert "sample (temperature 0.8)" in proc.stdout
  vocab = json.load(open(os.path.join(workdir, "vocab.json")))["chars"]
  assert set(sample.rstrip("\n")) <= set(vocab)


def test_list_describes_every_experiment():
  proc = launch("--list", real=True)
  assert proc.returncode == 0, proc.stderr
  lines = dict(line.split(None, 1) for line in proc.stdout.strip().splitlines())
  assert set(lines) == {"cnn_cifar", "cnn_mnist", "mlp_mnist", "lstm_mnist", "lstm_shakespeare", "rnn_shakespeare"}
  assert all(len(doc) > 10 for doc in lines.values())


@pytest.mark.parametrize("args, message", [
    (["--experiment=nope"], "unknown experiment 'nope'; choose one of: cnn_cifar, cnn_mnist"),
    (["--experiment=cnn_mnist", "--config.batchsize=3"], "unknown config field 'batchsize' (did you mean 'batch_size'?). Valid fields: augment, batch_size,"),
    (["--experiment=cnn_mnist", "--config.batch_size=big"], "--config.batch_size='big': expected a int like 128"),
    (["--experiment=cnn_mnist", "--config.model.activation=swish", "--config.max_steps=1"],
     "unknown activation 'swish'; choose one of"),
    (["--experiment=cnn_mnist", "--config.optimizer=lion", "--config.max_steps=1"], "unknown optimizer 'lion'"),
])
def test_bad_input_is_a_clear_error(args, message, tmp_path):
  proc = launch(*args, f"--workdir={tmp_path}")
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr


def test_missing_data_offline_fails_fast_with_instructions(tmp_path):
  start = time.time()
  proc = launch("--experiment=cnn_cifar", f"--workdir={tmp_path / 'run'}", f"--config.data_dir={tmp_path / 'empty'}",
                offline=True)
  elapsed = time.time() - start
  assert proc.returncode != 0
  assert elapsed < 15, elapsed
  assert "cifar10 3.0.2 is not prepared in" in proc.stderr and "no network" in proc.stderr
  assert "--config.data_dir=DIR or TFDS_DATA_DIR=DIR" in proc.stderr
  assert "Traceback" not in proc.stderr
