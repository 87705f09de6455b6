"""Scale-out: the same experiment on 1 device, on 8 (forced CPU devices), with FSDP, in 2 processes through
jax.distributed, and in bfloat16.

Tolerance: on 8 devices (or 2 processes) the global batch's loss is summed in another order, so the train loss
at every step may differ from the 1-device run's by float32 rounding; we allow a relative 1e-4 over 4 steps
(measured: ~1e-7). bfloat16 has 8 bits of mantissa: its losses must stay within 2% of float32's.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnets import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOCKED_LAUNCH = os.path.join(ROOT, "tests", "mocked_launch.py")
CNN = ["--experiment=cnn_mnist", "--config.max_steps=4", "--config.log_every_steps=1", "--config.batch_size=32",
       "--config.eval_batch_size=32", "--config.learning_rate=0.02", "--config.model.conv_features=(4,8)",
       "--config.model.pool_after=(1,)", "--config.model.dense_features=(16,)"]
# Long enough (80 steps) to be stopped in the middle; a checkpoint every 10 steps; evaluation only at the end.
LONG_CNN = ["--experiment=cnn_mnist", "--config.max_steps=80", "--config.num_epochs=40", "--config.batch_size=32",
            "--config.eval_batch_size=32", "--config.log_every_steps=10", "--config.checkpoint_every_steps=10",
            "--config.validation_percent=0",
            "--config.model.conv_features=(4,)", "--config.model.pool_after=(0,)", "--config.model.dense_features=(16,)"]
LSTM = ["--experiment=lstm_shakespeare", "--config.max_steps=4", "--config.log_every_steps=1",
        "--config.eval_every_steps=4", "--config.batch_size=8", "--config.seq_len=16", "--config.eval_streams=8",
        "--config.model.hidden_size=32", "--config.model.num_layers=2", "--config.sample_prompt=a",
        "--config.sample_length=10"]


SWEEP = CNN + ["--config.sweep.seed=(0,1)"]  # 2 members: member 0 is the run CNN (seed 0)


def env(devices: int) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "FNETS_MOCK_EXAMPLES": "64"}


def start(args, workdir, devices, log):
  return subprocess.Popen([sys.executable, MOCKED_LAUNCH, *args, f"--workdir={workdir}"], env=env(devices),
                          stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def run_all(runs: dict, tmp_path, at_once: int = 2) -> dict:
  """Runs the launches {name: (args, devices)}, `at_once` at a time (more would only crowd this 2-core machine and
  the other test worker); returns {name: workdir}."""
  from concurrent.futures import ThreadPoolExecutor

  def launch(name):
    args, devices = runs[name]
    with open(tmp_path / f"{name}.log", "w") as log:
      rc = start(args, tmp_path / name, devices, log).wait(timeout=600)
    assert rc == 0, f"{name} failed:\n" + (tmp_path / f"{name}.log").read_text()[-3000:]

  with ThreadPoolExecutor(at_once) as pool:
    list(pool.map(launch, runs))
  return {name: tmp_path / name for name in runs}


def records(workdir, split):
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in lines if r["split"] == split]


def assert_same_run(a, b, rtol=1e-4, steps=(1, 2, 3, 4)):
  train_a, train_b = records(a, "train"), records(b, "train")
  assert [r["step"] for r in train_a] == [r["step"] for r in train_b] == list(steps)
  np.testing.assert_allclose([r["loss"] for r in train_b], [r["loss"] for r in train_a], rtol=rtol)
  eval_a, eval_b = records(a, "eval"), records(b, "eval")
  assert len(eval_a) == len(eval_b) >= 1
  np.testing.assert_allclose([r["loss"] for r in eval_b], [r["loss"] for r in eval_a], rtol=rtol)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("parallel")
  return run_all({
      "cnn_1": (CNN, 1), "cnn_8": (CNN, 8), "long_cnn_1": (LONG_CNN, 1),
      "lstm_1": (LSTM, 1), "lstm_8_fsdp": (LSTM + ["--config.param_sharding=fsdp"], 8),
      "lstm_bf16": (LSTM + ["--config.dtype=bfloat16"], 1),
      "sweep_2": (SWEEP, 2), "sweep_8": (SWEEP, 8),
  }, tmp_path)


def test_cnn_on_8_devices_follows_the_1_device_run(runs):
  assert json.load(open(runs["cnn_8"] / "run.json"))[-1]["devices"] == [f"cpu:{i}" for i in range(8)]
  assert_same_run(runs["cnn_1"], runs["cnn_8"])
  # The 8-device run is a real change of placement, not the same program: float32 sums land differently.
  assert [r["loss"] for r in records(runs["cnn_1"], "train")] != [r["loss"] for r in records(runs["cnn_8"], "train")]


def test_lstm_on_8_devices_with_fsdp_follows_the_1_device_run(runs):
  assert_same_run(runs["lstm_1"], runs["lstm_8_fsdp"])
  assert records(runs["lstm_8_fsdp"], "test")[0]["num_chars"] == records(runs["lstm_1"], "test")[0]["num_chars"]


def test_sweep_members_over_devices_follow_the_1_device_run(runs, tmp_path):
  """2 members on 2 devices: each device trains one member; on 8, each member's batch is split as a single run's.
  Member 0 (seed 0) follows the 1-device run of seed 0, and both members agree between the two placements."""
  assert "a sweep of 2 members over 2 devices" in (runs["sweep_2"].parent / "sweep_2.log").read_text()
  assert "each member's batch split over 8 devices" in (runs["sweep_8"].parent / "sweep_8.log").read_text()
  for split in ("train", "eval", "test"):
    single = records(runs["cnn_1"], split)
    for name in ("sweep_2", "sweep_8"):
      member_0 = [r for r in records(runs[name], split) if r["member"] == 0]
      assert [r["step"] for r in member_0] == [r["step"] for r in single] and single
      np.testing.assert_allclose([r["loss"] for r in member_0], [r["loss"] for r in single], rtol=1e-4)
    a, b = records(runs["sweep_2"], split), records(runs["sweep_8"], split)
    assert [(r["step"], r["member"]) for r in a] == [(r["step"], r["member"]) for r in b] and {r["member"] for r in a} == {0, 1}
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-4)


def test_bfloat16_trains_close_to_float32(runs):
  f32 = [r["loss"] for r in records(runs["lstm_1"], "train")]
  bf16 = [r["loss"] for r in records(runs["lstm_bf16"], "train")]
  assert bf16 != f32  # it did compute in bfloat16
  np.testing.assert_allclose(bf16, f32, rtol=2e-2)  # step by step: each step reads the next window of its stream


def test_bfloat16_computes_in_bf16_with_float32_params():
  for config in (dict(name="char_lm", embed_dim=8, hidden_size=16), dict(name="cnn", conv_features=(4,))):
    model = models.create(config, dtype=models.compute_dtype("bfloat16"),
                          **({"vocab_size": 11} if config["name"] == "char_lm" else {}))
    x = jnp.zeros((2, 5), jnp.int32) if config["name"] == "char_lm" else jnp.zeros((2, 8, 8, 1))
    kwargs = {} if config["name"] == "char_lm" else {"train": False}
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, **kwargs))  # (dtypes only: no compile)
    assert {a.dtype for a in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x, **kwargs))(variables))
    assert "dot_general" in jaxpr or "conv_general_dilated" in jaxpr
    assert all("bf16" in line for line in jaxpr.splitlines() if "= dot_general" in line or "= conv_general" in line)
    out = jax.eval_shape(lambda v: model.apply(v, x, **kwargs), variables)
    assert jax.tree.leaves(out)[0].dtype == jnp.float32  # logits (and so the loss) in float32


def test_shardings_and_batch_errors_on_8_devices():
  script = textwrap.dedent("""
      import numpy as np, jax, jax.numpy as jnp
      from fnets import parallel
      mesh = parallel.make_mesh()
      assert mesh.size == 8
      state = {"big": jnp.zeros((24, 4096)), "odd": jnp.zeros((3, 7001)), "small": jnp.zeros((8, 8)), "n": 0}
      specs = {k: s.spec for k, s in parallel.state_shardings(mesh, state, "fsdp").items()}
      assert specs == {"big": jax.P(None, "data"), "odd": jax.P(), "small": jax.P(), "n": jax.P()}, specs
      assert all(s.spec == jax.P() for s in jax.tree.leaves(parallel.state_shardings(mesh, state, "replicated")))
      x = np.arange(16 * 3).reshape(16, 3)
      g = parallel.to_global(x, parallel.batch_sharding(mesh))
      assert len(g.addressable_shards) == 8 and g.addressable_shards[1].data.shape == (2, 3)
      assert (parallel.to_host(g) == x).all()
      try:
        parallel.check_divisible("batch_size", 30, mesh)
      except Exception as e:  # (fnets.config.ConfigError: a user's mistake, one line)
        assert "batch_size=30 cannot be split over 8 devices" in str(e) and "--config.batch_size=24 or 32" in str(e)
      else:
        raise AssertionError("no error")
      print("ok")
      """)
  proc = subprocess.run([sys.executable, "-c", script], env=env(8), cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_pair(args, workdir, tmp_path):
  """Process 0, then process 1 once process 0's coordinator listens: a process that finds no coordinator retries
  with gRPC's growing backoff, which on a loaded machine can outlast process 0's 2-minute wait for its topology."""
  port = _free_port()
  logs = [open(tmp_path / f"p{i}.log", "w") for i in range(2)]
  procs = [start([*args, f"--coordinator_address=localhost:{port}", "--num_processes=2", "--process_id=0"],
                 workdir, 2, logs[0])]
  begin = time.time()
  while True:
    assert procs[0].poll() is None and time.time() - begin < 300, pair_logs(tmp_path)
    try:
      socket.create_connection(("localhost", port), timeout=1).close()
      break
    except OSError:
      time.sleep(0.1)
  procs.append(start([*args, f"--coordinator_address=localhost:{port}", "--num_processes=2", "--process_id=1"],
                     workdir, 2, logs[1]))
  return procs


def pair_logs(tmp_path) -> str:
  return "\n".join(f"--- process {i}:\n" + (tmp_path / f"p{i}.log").read_text()[-3000:] for i in range(2))


def launch_pair(args, workdir, tmp_path, expect=0):
  for proc in start_pair(args, workdir, tmp_path):
    assert proc.wait(timeout=600) == expect, pair_logs(tmp_path)


def test_two_processes_stop_together_resume_and_evaluate(runs, tmp_path):
  """2 processes × 2 CPU devices on localhost (jax.distributed, gloo collectives). Only process 1 gets SIGTERM:
  both agree on the step, save that checkpoint together and exit 143; the same command resumes them, and the pair
  follows the 1-device run (train losses and test loss up to float32 rounding). Only process 0 writes the logs;
  both restore the checkpoint for --mode=eval."""
  workdir = tmp_path / "stopped"
  procs = start_pair(LONG_CNN, workdir, tmp_path)
  begin = time.time()
  while not (workdir / "checkpoints" / "20").exists():  # (the limit only catches a hang: a loaded machine is slow)
    assert all(p.poll() is None for p in procs) and time.time() - begin < 900, pair_logs(tmp_path)
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGTERM)
  stopped_at = []
  for i, proc in enumerate(procs):
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM, pair_logs(tmp_path)
    line = next(l for l in (tmp_path / f"p{i}.log").read_text().splitlines() if "stopped by SIGTERM at step" in l)
    stopped_at.append(int(line.split("at step ")[1].split(":")[0]))
  step = stopped_at[0]
  assert stopped_at[1] == step < 80 and (workdir / "checkpoints" / str(step)).is_dir()
  launch_pair(LONG_CNN, workdir, tmp_path)
  record = json.load(open(workdir / "run.json"))
  assert len(record) == 2 and all(r["processes"] == 2 and len(r["devices"]) == 4 for r in record)
  reference = records(runs["long_cnn_1"], "train")
  resumed = records(workdir, "train")
  assert [r["step"] for r in resumed] == [r["step"] for r in reference] == list(range(10, 81, 10))
  # (The first record after the resume averages only the steps since the checkpoint.)
  same = [i for i, r in enumerate(reference) if not step < r["step"] < step + 10]
  np.testing.assert_allclose([resumed[i]["loss"] for i in same], [reference[i]["loss"] for i in same], rtol=1e-4)
  (test,) = records(workdir, "test")
  np.testing.assert_allclose(test["loss"], records(runs["long_cnn_1"], "test")[0]["loss"], rtol=1e-4)

  launch_pair([*LONG_CNN, "--mode=eval"], workdir, tmp_path)  # the latest checkpoint: no validation split here
  evaluated = json.load(open(workdir / "eval.json"))
  assert evaluated["checkpoint_step"] == 80 and evaluated["test"]["accuracy"] == test["accuracy"]
  np.testing.assert_allclose(evaluated["test"]["loss"], test["loss"], rtol=1e-6)
