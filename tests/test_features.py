"""What a researcher expects around a run: a parameter summary, a profile trace, starting from another run's
weights, and a TensorBoard log that a resume does not duplicate."""

import dataclasses
import glob
import json
import os
import struct

import jax
import numpy as np
import pytest

from fnets.experiments import cnn_mnist
from fnets import config as config_lib
from fnets import loop, runs
from fnets.tasks import classify

SMALL = ["--config.batch_size=16", "--config.num_epochs=2", "--config.model.conv_features=(4,)",
         "--config.model.pool_after=(0,)", "--config.model.dense_features=(8,)", "--config.log_every_steps=1"]


def config(*args):
  return config_lib.override(cnn_mnist.get_config(), [*SMALL, *args])


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
  """A finished 8-step run (64 mock examples, 4 steps an epoch), profiled at steps 2-3."""
  import tensorflow_datasets as tfds
  from conftest import METADATA
  workdir = str(tmp_path_factory.mktemp("source") / "run")
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=METADATA):
    loop.train_and_evaluate(config('--config.profile_steps=2:4'), workdir)
  return workdir


def test_parameter_summary_in_run_json_and_console(source_run, mock_tfds, tmp_path, capsys):
  record = json.load(open(os.path.join(source_run, "run.json")))[-1]
  layers = record["layers"]
  assert list(layers) == ["BatchNorm_0", "Conv_0", "Dense_0", "Dense_1"]
  assert layers["Conv_0"]["shapes"] == {"kernel": [3, 3, 1, 4]} and layers["Conv_0"]["params"] == 36
  assert sum(layer["params"] for layer in layers.values()) == record["params"]
  loop.train_and_evaluate(config("--config.max_steps=1"), str(tmp_path / "again"))
  first = capsys.readouterr().err.splitlines()[0]
  assert f"{record['params']:,} parameters (BatchNorm_0 8, Conv_0 36, Dense_0" in first


def test_profile_steps_write_a_trace(source_run):
  traces = glob.glob(os.path.join(source_run, "profile", "**", "*.xplane.pb"), recursive=True)
  assert traces and os.path.getsize(traces[0]) > 0
  with pytest.raises(config_lib.ConfigError, match="profile_steps='3:1'"):
    loop.check(config("--config.profile_steps=3:1"))


def test_init_from_starts_from_the_source_weights_with_a_fresh_optimizer(source_run, mock_tfds, monkeypatch, tmp_path):
  seen = []
  setup = classify.setup

  def setup_and_watch(config, **kwargs):
    task = setup(config, **kwargs)

    def train_step(state, step):
      seen.append(jax.device_get(state))
      return task.train_step(state, step)
    return dataclasses.replace(task, train_step=train_step)

  monkeypatch.setattr(classify, "setup", setup_and_watch)
  loop.train_and_evaluate(config(f"--config.init_from={source_run}", "--config.max_steps=1"), str(tmp_path / "ft"))
  best_step = runs.Checkpoints(source_run, 3, "accuracy", "max")
  best = best_step.restore(seen[0], best=True)
  best_step.close()
  start = seen[0]
  assert int(start.step) == 0
  for a, b in zip(jax.tree.leaves((start.params, start.model_state)), jax.tree.leaves((best.params, best.model_state))):
    np.testing.assert_array_equal(a, b)  # the source's best weights
  fresh = jax.device_get(setup(config()).state.opt_state)
  for a, b in zip(jax.tree.leaves(start.opt_state), jax.tree.leaves(fresh)):
    np.testing.assert_array_equal(a, b)  # and a fresh optimizer
  with pytest.raises(runs.RunError, match=r"does not fit this model \(.*params/Conv_0/kernel: \(3, 3, 1, 4\) there, "
                                          r"\(3, 3, 1, 6\) here"):
    loop.train_and_evaluate(config(f"--config.init_from={source_run}", "--config.model.conv_features=(6,)"),
                            str(tmp_path / "mismatch"))


def tensorboard_scalars(workdir) -> list[tuple[str, int]]:
  """(tag, step) of the scalar events TensorBoard shows: events past a purge_step marker (SessionLog START)
  written by a later writer are dropped, as TensorBoard drops them."""
  from tensorboardX.proto import event_pb2
  shown = []
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
    data = open(path, "rb").read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        shown = [(tag, step) for tag, step in shown if step < event.step]
      for value in event.summary.value:
        if value.HasField("simple_value"):
          shown.append((value.tag, event.step))
  return shown


def test_a_resumed_run_shows_each_step_once_in_tensorboard(mock_tfds, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config("--config.max_steps=6", "--config.checkpoint_every_steps=2"), workdir)
  for step in (6,):  # lose the end: the run resumes from step 4 and writes steps 5 and 6 again
    import shutil
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  loop.train_and_evaluate(config("--config.max_steps=6", "--config.checkpoint_every_steps=2"), workdir)
  shown = tensorboard_scalars(workdir)
  assert len(shown) == len(set(shown))
  assert ("train/loss", 6) in shown and ("train/loss", 1) in shown
  assert len(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))) == 2


@pytest.fixture(scope="module")
def exported_lm(tmp_path_factory):
  """A 2-step character LSTM (2 layers) and its export."""
  import tensorflow_datasets as tfds
  from conftest import METADATA
  from fnets.experiments import lstm_shakespeare
  config = config_lib.override(lstm_shakespeare.get_config(), [
      "--config.max_steps=2", "--config.batch_size=4", "--config.seq_len=16", "--config.eval_every_steps=2",
      "--config.model.hidden_size=16", "--config.model.embed_dim=8", "--config.model.num_layers=2",
      "--config.eval_streams=4", "--config.sample_prompt=a", "--config.sample_length=4"])
  workdir = str(tmp_path_factory.mktemp("lm") / "run")
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=METADATA):
    loop.train_and_evaluate(config, workdir)
    paths = loop.export(config, workdir)
    task = loop.setup(config)
  state, _ = runs.restore_for_eval(workdir, task.state, "loss", "min")
  return config, task, jax.device_get(state), paths


def test_export_writes_the_checkpoint_weights(exported_lm):
  config, task, state, paths = exported_lm
  saved = dict(np.load(paths["params"]))
  assert saved.keys() == {f"params/{k}" for k in runs.by_path(state.params)}
  for name, x in runs.by_path(state.params).items():
    np.testing.assert_array_equal(saved[f"params/{name}"], x)


def test_exported_lstm_loads_into_torch_and_gives_the_same_logits(exported_lm):
  torch = pytest.importorskip("torch")
  config, task, state, paths = exported_lm
  weights = {k: torch.from_numpy(np.asarray(v)) for k, v in np.load(paths["torch"]).items()}
  vocab, embed, hidden = weights["head.bias"].shape[0], config.model.embed_dim, config.model.hidden_size
  net = torch.nn.ModuleDict({"embed": torch.nn.Embedding(vocab, embed),
                             "rnn": torch.nn.LSTM(embed, hidden, num_layers=2, batch_first=True),
                             "head": torch.nn.Linear(hidden, vocab)})
  net.load_state_dict(weights)  # strict: every name and shape matches
  tokens = np.random.default_rng(0).integers(0, vocab, (3, 20))
  expected, _ = task.context["model"].apply({"params": state.params}, tokens)
  with torch.no_grad():
    y, _ = net["rnn"](net["embed"](torch.from_numpy(tokens)))
    logits = net["head"](y).numpy()
  np.testing.assert_allclose(logits, np.asarray(expected), atol=1e-5)


_COMPILE = """
import fnets, jax, jax.numpy as jnp
events = []
jax.monitoring.register_event_listener(lambda event, **kw: events.append(event.rsplit("/", 1)[-1]))
jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))).block_until_ready()
print(events.count("cache_hits"), events.count("cache_misses"))
"""


def test_compiled_steps_are_cached_between_processes(tmp_path):
  """JAX's persistent compilation cache is on by default, in fnets' cache dir: a second process loads the
  program the first compiled. A cache dir of the user's (JAX_COMPILATION_CACHE_DIR) wins."""
  import subprocess
  import sys
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
  env.update(FNETS_CACHE_DIR=str(tmp_path / "fnets"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  def hits_and_misses(env):
    out = subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, check=True)
    return tuple(int(n) for n in out.stdout.split()[-2:])

  hits, compiled = hits_and_misses(env)
  assert hits == 0 and compiled > 0 and os.listdir(tmp_path / "fnets" / "jax")
  assert hits_and_misses(env) == (compiled, 0)  # every program from the cache
  mine = {**env, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "mine")}
  assert hits_and_misses(mine) == (0, compiled) and os.listdir(tmp_path / "mine")
  assert hits_and_misses({**env, "JAX_ENABLE_COMPILATION_CACHE": "false"}) == (0, 0)
