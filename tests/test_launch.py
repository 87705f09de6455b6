"""launch.py end to end, in subprocesses, as a user runs it."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

SMOKE = ["--config.batch_size=16", "--config.eval_batch_size=24", "--config.max_steps=3",
         "--config.log_every_steps=1"]


def launch(*args, offline=False, real=False, timeout=300, env=None):
  env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
  if offline:
    env["FNETS_OFFLINE"] = "1"
  script = "launch.py" if real else os.path.join("tests", "mocked_launch.py")
  return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """cnn_mnist's smoke run: checked as an experiment end to end, then the run the other tests compare with or try
  to disturb. Its console output is in ../stderr.txt."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  proc = launch("--experiment=cnn_mnist", f"--workdir={workdir}", *SMOKE)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (workdir.parent / "stderr.txt").write_text(proc.stderr)
  return workdir


@pytest.mark.parametrize("experiment", ["cnn_cifar", "cnn_mnist", "mlp_mnist", "lstm_mnist"])
def test_experiment_end_to_end(experiment, tmp_path, request):
  if experiment == "cnn_mnist":
    workdir = request.getfixturevalue("finished_run")
    stderr = (workdir.parent / "stderr.txt").read_text()
  else:
    workdir = str(tmp_path / experiment)
    proc = launch(f"--experiment={experiment}", f"--workdir={workdir}", *SMOKE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stderr = proc.stderr
  records = read_metrics(workdir)
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3]
  for r in train:
    assert {"loss", "accuracy", "learning_rate", "examples_per_sec"} <= set(r)
  (test,) = [r for r in records if r["split"] == "test"]
  assert test["num_examples"] == 64  # every mock test example once, though 64 is not a multiple of 24
  assert 0.0 <= test["accuracy"] <= 1.0
  held_out = experiment != "cnn_cifar"  # (which trains on the whole train split: it selects nothing)
  assert [r["split"] for r in records].count("eval") == held_out
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["max_steps"] == 3 and config["batch_size"] == 16
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
  assert "[train] step 3/3" in stderr  # console progress


# (lstm_shakespeare itself runs through launch.py in test_parallel.py, on 1 and 8 devices and in bfloat16.)
@pytest.mark.parametrize("experiment", ["lstm_shakespeare:rnn"])
def test_language_model_end_to_end(experiment, tmp_path):
  workdir = str(tmp_path / experiment.replace(":", "-"))
  proc = launch(f"--experiment={experiment}", f"--workdir={workdir}", "--config.max_steps=4", "--config.batch_size=4",
                "--config.seq_len=16", "--config.eval_every_steps=2", "--config.log_every_steps=2",
                "--config.model.hidden_size=32", "--config.model.num_layers=2", "--config.eval_streams=8",
                "--config.sample_prompt=a", "--config.sample_length=30")
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = read_metrics(workdir)
  assert [(r["step"], r["split"]) for r in records] == [
      (2, "train"), (2, "eval"), (4, "train"), (4, "eval"), (4, "test"), (4, "test_best")]
  for r in records[1:]:
    if r["split"] != "train":
      assert abs(r["bits_per_char"] - r["loss"] / np.log(2)) < 1e-6
  # The mock validation text is 64 examples concatenated; all but its first character are predicted.
  assert records[1]["num_chars"] == records[3]["num_chars"] > 100
  sample = open(os.path.join(workdir, "sample.txt")).read()
  assert sample.startswith("a") and len(sample.rstrip("\n")) == 31
  assert "sample (temperature 0.8)" in proc.stderr
  vocab = json.load(open(os.path.join(workdir, "vocab.json")))["chars"]
  assert set(sample.rstrip("\n")) <= set(vocab)


def test_list_describes_every_experiment_and_variant():
  proc = launch("--list", real=True)
  assert proc.returncode == 0, proc.stderr
  lines = dict(line.split(None, 1) for line in proc.stdout.strip().splitlines())
  assert set(lines) == {"cnn_cifar", "cnn_mnist", "mlp_mnist", "lstm_mnist", "lstm_shakespeare",
                        "lstm_shakespeare:lstm", "lstm_shakespeare:rnn"}
  assert all(len(doc) > 10 for doc in lines.values())


def test_config_file_and_experiment_name_give_the_same_run(finished_run, tmp_path):
  """--config=PATH is the Flax convention; --experiment=NAME (finished_run) its short form; a config file outside
  the repository runs too (here: one that imports an experiment and sets in the file what the others set by flags)."""
  outside = tmp_path / "elsewhere" / "my_mnist.py"
  outside.parent.mkdir()
  outside.write_text("from fnets.experiments import cnn_mnist\n\ndef get_config():\n  c = cnn_mnist.get_config()\n"
                     "  c.batch_size, c.eval_batch_size, c.max_steps, c.log_every_steps = 16, 24, 3, 1\n  return c\n")
  runs = {"by_path": [f"--config={os.path.join(ROOT, 'experiments', 'cnn_mnist.py')}", *SMOKE],
          "outside": [f"--config={outside}"]}
  for name, args in runs.items():
    proc = launch(*args, f"--workdir={tmp_path / name}")
    assert proc.returncode == 0, proc.stderr[-3000:]
  strip = lambda r: {k: v for k, v in r.items() if k != "examples_per_sec"}
  by_name = [strip(r) for r in read_metrics(finished_run)]
  assert by_name == [strip(r) for r in read_metrics(tmp_path / "by_path")]
  assert by_name == [strip(r) for r in read_metrics(tmp_path / "outside")]


def test_a_30_step_run_prints_a_readable_console(tmp_path):
  proc = launch("--experiment=cnn_mnist", f"--workdir={tmp_path}", "--config.max_steps=30", "--config.batch_size=8",
                "--config.eval_batch_size=32", "--config.log_every_steps=10", "--config.model.conv_features=(4,)",
                "--config.model.pool_after=(0,)")
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = (proc.stdout + proc.stderr).strip().splitlines()
  assert len(lines) <= 25, "\n".join(lines)
  assert not [line for line in lines if "orbax" in line.lower() or line.startswith("I1") or line.startswith("I0")]
  assert "[train] step 30/30" in proc.stderr and "[test] step 30/30" in proc.stderr


def snapshot(workdir):
  """Every file of a workdir with its bytes."""
  return {os.path.relpath(os.path.join(root, name), workdir): open(os.path.join(root, name), "rb").read()
          for root, _, names in os.walk(workdir) for name in names}


LSTM = ["--experiment=lstm_shakespeare", "--config.max_steps=1"]
# Mistakes in a config's values, found by `loop.check` after the flags are read: checked in this process (the same
# ConfigError that main.py prints as the one line); two of them also go through launch.py below.
VALUE_MISTAKES = [  # (arguments, what the one line must name)
    (["--experiment=cnn_mnist", "--config.learning_rate=0"], "--config.learning_rate=0.0: must be > 0"),
    (["--experiment=cnn_mnist", "--config.momentum=1.5"], "--config.momentum=1.5: must be in [0, 1)"),
    (["--experiment=cnn_mnist", "--config.sweep.batch_size=(64,128)"], "--config.sweep.batch_size: batch_size "
     "changes the shapes or the structure of the compiled step, so it cannot be swept (run one job per value); "
     "fields that can: seed, learning_rate,"),
    (["--experiment=cnn_mnist", "--config.sweep.seed=()"], "--config.sweep.seed=(): give a tuple of one or more"),
    (["--experiment=cnn_mnist", "--config.sweep.seed=(0,0.5)"], "--config.sweep.seed=(0,0.5): expected a tuple of int"),
    (["--experiment=cnn_mnist", "--config.sweep.momentum=(0.9,)", "--config.validation_percent=0",
      "--config.sweep.learning_rate=(0.1,0.2)"], "a sweep over hyperparameters chooses on the validation split"),
    (["--experiment=cnn_mnist", "--config.optimizer=lion"], "--config.optimizer='lion': unknown choice; choose one of: sgd, adam, adamw"),
    (["--experiment=cnn_mnist", "--config.schedule=linear"], "--config.schedule='linear': unknown choice"),
    (["--experiment=cnn_mnist", "--config.dtype=float16"], "--config.dtype='float16': unknown choice; choose one of: float32, bfloat16"),
    (["--experiment=cnn_mnist", "--config.param_sharding=zero3"], "--config.param_sharding='zero3'"),
    (["--experiment=cnn_mnist", "--config.model.activation=swish"], "--config.model.activation='swish'"),
    (["--experiment=cnn_mnist", "--config.model.pool=median"], "--config.model.pool='median'"),
    (["--experiment=cnn_mnist", "--config.model.name=resnet"], "--config.model.name='resnet'"),
    (["--experiment=cnn_mnist", "--config.model.conv_features=(16,0)"], "--config.model.conv_features=(16, 0)"),
    (["--experiment=cnn_mnist", "--config.model.pool_after=(9,)"], "--config.model.pool_after=(9,): must index"),
    (["--experiment=cnn_mnist", "--config.task=regress"], "--config.task='regress'"),
    ([*LSTM, "--config.seq_len=0"], "--config.seq_len=0: must be a positive integer"),
    ([*LSTM, "--config.model.cell=gru"], "--config.model.cell='gru': unknown choice; choose one of: lstm, rnn"),
]
MALFORMED = [  # launch.py's own routes: flags, config values (two), the data, the workdir
    (["--experiment=cnn_mnist", "--config.batch_size=0"], "--config.batch_size=0: must be a positive integer"),
    (["--experiment=cnn_mnist", "--config.sweep.learning_rate=(0.1,-1)"], "in the sweep, at {'learning_rate': -1.0}: "
     "--config.learning_rate=-1.0: must be > 0"),
    (["--experiment=cnn_mnist", "--config.batch_size=1.5"], "--config.batch_size=1.5: expected an int like 128"),
    (["--experiment=cnn_mnist", "--config.sweep.lerning_rate=(0.1,)"], "--config.sweep.lerning_rate: the config has "
     "no field 'lerning_rate' (did you mean 'learning_rate'?)"),
    (["--experiment=cnn_mnist", "--config.batchsize=3"], "unknown config field 'batchsize' (did you mean 'batch_size'?)"),
    (["--experiment=cnn_mnist", "--config.x", "2"], "cannot read '--config.x': write config overrides as --config.FIELD=VALUE"),
    (["--experiment=cnn_mnist", "extra"], "unexpected argument 'extra'"),
    (["--experiment=cnn_mnist", "--mode=nope"], "--mode"),
    (["--experiment=nope"], "unknown experiment 'nope'"),
    (["--experiment=lstm_shakespeare:gru"], "unknown variant 'gru'; choose one of: lstm, rnn"),
    (["--config=/nonexistent/my_config.py"], "--config=/nonexistent/my_config.py: no such file"),
    ([f"--config={ROOT}/experiments"], "not a Python file"),
    (["--config.batch_size=8"], "needs a config"),
    (["--experiment=cnn_mnist", *SMOKE, "--config.learning_rate=0.5"], "holds a run with another config "
     "(learning_rate: recorded 0.1, now 0.5)"),
]


def test_multi_process_flag_mistakes_are_one_line_errors():
  """(--coordinator_address=HOST without a port goes through launch.py below.)"""
  from fnets import parallel
  from fnets.errors import ConfigError
  for kwargs, needle in ((dict(num_processes=0), "--num_processes=0: give the number of processes of the run"),
                         (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2),
                          "--process_id=2: give this process's index, from 0 to --num_processes - 1")):
    with pytest.raises(ConfigError, match=re.escape(needle)):
      parallel.initialize(**kwargs)


@pytest.mark.parametrize("args,needle", VALUE_MISTAKES, ids=[" ".join(a[1:]) for a, _ in VALUE_MISTAKES])
def test_config_value_mistakes_are_one_line_errors(args, needle):
  from fnets import config as config_lib
  from fnets import loop
  from fnets.errors import ConfigError
  config = config_lib.load(config_lib.experiment_path(args[0].removeprefix("--experiment=")))
  with pytest.raises(ConfigError) as e:
    loop.check(config_lib.override(config, args[1:]))
  assert needle in str(e.value) and "\n" not in str(e.value)


def test_malformed_invocations_fail_in_one_line_and_leave_the_run_alone(finished_run, tmp_path):
  before = snapshot(finished_run)
  damaged = tmp_path / "damaged"  # a copy of the run whose config.json was cut short
  damaged.mkdir()
  (damaged / "config.json").write_text((finished_run / "config.json").read_text()[:40])
  (damaged / "run.json").write_text((finished_run / "run.json").read_text())
  damaged_before = snapshot(damaged)
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  cases = [(args + [f"--workdir={finished_run}"], needle) for args, needle in MALFORMED] + [
      (["--experiment=cnn_mnist", *SMOKE, f"--workdir={a_file}"], f"--workdir={a_file} is a file, not a directory"),
      (["--experiment=cnn_mnist", *SMOKE, f"--workdir={a_file}/run"], "is a file, not a directory"),
      (["--mode=eval", f"--workdir={tmp_path / 'nothing'}"], "holds no run (no config.json)"),
      (["--experiment=cnn_mnist", *SMOKE, f"--workdir={tmp_path / ('x' * 300) / 'run'}"],
       "cannot be created (File name too long"),
      (["--experiment=cnn_mnist", *SMOKE, f"--workdir={tmp_path / 'mp'}", "--coordinator_address=localhost"],
       "--coordinator_address=localhost: write HOST:PORT"),
      (["--experiment=cnn_mnist", *SMOKE, f"--workdir={damaged}"], f"{damaged}/config.json is damaged (JSONDecodeError"),
      (["--mode=eval", f"--workdir={damaged}"], f"{damaged}/config.json is damaged"),
      (["--experiment=cnn_mnist", *SMOKE, "--workdir="], "--workdir= is empty: give the run's directory"),
      # A mistake found once the data is read: the new run's directory is not even created.
      (["--experiment=cnn_mnist", "--config.batch_size=100000", f"--workdir={tmp_path / 'new'}"],
       "--config.batch_size=100000 is larger than the 64 training examples"),
  ]
  assert len(cases) >= 20

  def run(case):
    return case, launch(*case[0], timeout=300)

  from concurrent.futures import ThreadPoolExecutor
  with ThreadPoolExecutor(3) as pool:
    results = list(pool.map(run, cases))
  for (args, needle), proc in results:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (args, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (args, proc.stderr[-2000:])
  assert snapshot(finished_run) == before
  assert snapshot(damaged) == damaged_before
  assert not (tmp_path / "new").exists() and not (tmp_path / "mp").exists()


def test_missing_data_offline_fails_fast_with_instructions(tmp_path):
  start = time.time()
  proc = launch("--experiment=cnn_cifar", f"--workdir={tmp_path / 'run'}", f"--config.data_dir={tmp_path / 'empty'}",
                offline=True)
  elapsed = time.time() - start
  assert proc.returncode != 0
  assert elapsed < 180, elapsed  # (TFDS alone retries the download for many minutes; this bounds a loaded machine)
  assert "cifar10 3.0.2 is not prepared in" in proc.stderr and "no network" in proc.stderr
  assert "--config.data_dir=DIR or TFDS_DATA_DIR=DIR" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()  # a run that could not start wrote nothing


def test_damaged_dataset_files_fail_in_one_line(tmp_path):
  """A prepared dataset whose array_record files are damaged (here: cut to random bytes) is named with the fix."""
  import shutil
  version_dir = tmp_path / "data" / "mnist" / "3.0.1"
  shutil.copytree(os.path.join(ROOT, "tests", "tfds_metadata", "mnist", "3.0.1"), version_dir)
  junk = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
  for split in ("train", "test"):
    (version_dir / f"mnist-{split}.array_record-00000-of-00001").write_bytes(junk)
  proc = launch("--experiment=mlp_mnist", f"--workdir={tmp_path / 'run'}", f"--config.data_dir={tmp_path / 'data'}",
                real=True)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and f"the files of mnist in {version_dir} cannot be read" in lines[0], proc.stderr[-2000:]
  assert "prepare the dataset again" in lines[0]
  assert not (tmp_path / "run").exists()
