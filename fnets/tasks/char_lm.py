"""Character language modelling (`config.task = "char_lm"`): the building blocks of a run, and `setup(config)`,
which puts them together into the task that fnets/loop.py trains and evaluates; at the end it writes a sample.

Stages: mesh → input (text, vocabulary) → model → optimizer → initial state → jitted steps. The same code runs
on one device or many, in one process or many (fnets/parallel.py). A sweep (fnets/sweeps.py) trains its members
at once, as fnets/tasks/classify.py does: `vmap` over their stacked states, each with its seed's windows.
"""

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fnets import config as config_lib
from fnets import models, optim, parallel, sweeps
from fnets.data import text as text_data
from fnets.errors import ConfigError, DataError
from fnets.run_log import console
from fnets.state import Task, TrainState

SPLITS = ("train", "validation", "test")


def check(config) -> None:
  """The fields this task and the modules it uses read."""
  config_lib.require(config, "positive_int", "batch_size", "seq_len", "num_steps", "eval_every_steps",
                     "eval_streams", "sample_length")
  config_lib.require(config, "int>=0", "warmup_steps")
  config_lib.require(config, ">0", "sample_temperature", "text_fractions")
  if len(config.text_fractions) != 3:
    config_lib.fail(config, "text_fractions", "give three fractions: train, validation and test")
  for module in (models, optim, parallel):
    module.check(config)


def train_step(state: TrainState, tokens_BxT1, first, key, values, *, build):
  """One step of truncated BPTT on windows of T+1 characters: predict characters 1..T from 0..T-1, starting from
  the state the previous step ended in (model_state["carry"]; zeros where `first`, an epoch's first window).
  The gradient stops at the window's start: the carried state enters as a constant. `build(values)`: the model
  and optimizer of the run, or of a sweep member (its swept `values`, traced)."""
  model, tx, lr_schedule = build(values)
  params, step = state.params, state.step
  dropout_key = jax.random.fold_in(key, step)
  carry = jax.tree.map(lambda a: jnp.where(first, jnp.zeros_like(a), a), state.model_state["carry"])

  def loss_fn(params):
    logits_BxTxV, carry_out = model.apply({"params": params}, tokens_BxT1[:, :-1], carry, train=True,
                                          rngs={"dropout": dropout_key})
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, tokens_BxT1[:, 1:]).mean(), carry_out

  (loss, carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, state.opt_state, params)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": lr_schedule(step)}
  return TrainState(step + 1, optax.apply_updates(params, updates), opt_state, {"carry": carry}), metrics


def eval_chunk(params, state, inputs_BxT, targets_BxT, mask_BxT, *, model):
  logits_BxTxV, state = model.apply({"params": params}, inputs_BxT, state)
  nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)
  return state, jnp.sum(nll_BxT * mask_BxT), jnp.sum(mask_BxT)


def evaluate(eval_fn, params, ids, num_streams: int, length: int) -> dict | list[dict]:
  """Loss over the whole text, in nats and bits per character; a list, one per member, for a sweep's params."""
  state, total, count = None, 0.0, 0.0
  for inputs, targets, mask in text_data.stream_chunks(ids, num_streams, length):
    state, nll, n = eval_fn(params, state, inputs, targets, mask)
    total, count = total + nll, count + n
  total, count = parallel.to_host((total, count))
  metrics = lambda nats, n: {"loss": nats, "bits_per_char": nats / math.log(2), "num_chars": int(n)}
  if np.ndim(total) == 0:
    return metrics(float(total / count), count)
  return [metrics(float(t / n), n) for t, n in zip(total, count)]


def sample(model, params, vocab: text_data.Vocab, prompt: str, length: int, temperature: float, key) -> str:
  """Feeds `prompt`, then draws `length` characters one at a time at `temperature`, carrying the state."""
  prompt_ids = jnp.asarray(vocab.encode(prompt))[None]

  @jax.jit
  def generate(params, key):
    logits, state = model.apply({"params": params}, prompt_ids)

    def step(carry, key):
      logits_1xV, state = carry
      token = jax.random.categorical(key, logits_1xV / temperature)
      logits, state = model.apply({"params": params}, token[:, None], state)
      return (logits[:, -1], state), token[0]

    _, tokens = jax.lax.scan(step, (logits[:, -1], state), jax.random.split(key, length))
    return tokens

  return prompt + vocab.decode(parallel.to_host(generate(params, key)))


# --- The building blocks. Each takes the config and what the earlier ones made.

def load_data(config, mesh, texts: dict[str, str] | None = None, vocab: text_data.Vocab | None = None):
  """(vocab, {split: ids}): the vocabulary comes from the train split and is saved with the run (`vocab`: the one
  a run saved). A file of yours (text:PATH) gets an unknown symbol for characters its train part lacks. `texts`:
  the splits' texts of your own instead of the config's dataset."""
  parallel.check_divisible("batch_size", config.batch_size, mesh)
  parallel.check_divisible("eval_streams", config.eval_streams, mesh)
  texts = texts or text_data.load_text(config.dataset, config.data_dir or None, SPLITS, config.text_fractions)
  vocab = vocab or text_data.Vocab.from_text(texts["train"], unknown=config.dataset.startswith("text:"))
  try:
    ids = {split: vocab.encode(text) for split, text in texts.items()}
  except ValueError as e:  # only a saved vocabulary can lack characters of the text
    raise DataError(f"the run's saved vocabulary (vocab.json) does not fit {config.dataset}: {e}; this workdir "
                    f"was trained on other text: give its dataset, or start again with --fresh") from None
  if (config.batch_size + 1) * config.seq_len >= len(ids["train"]):
    raise ConfigError(f"--config.batch_size={config.batch_size} streams of --config.seq_len={config.seq_len} "
                      f"characters and a spare window do not fit the {len(ids['train']):,} characters of the train "
                      f"text of {config.dataset}; use a smaller batch or window, or more text")
  for split in ("validation", "test"):
    if len(ids[split]) < 2:
      raise ConfigError(f"the {split} part of {config.dataset} has {len(ids[split])} characters; give more text or "
                        f"a larger --config.text_fractions share")
  try:
    vocab.encode(config.sample_prompt)  # a prompt the vocabulary cannot encode fails now, not after training
  except ValueError as e:
    raise ConfigError(f"--config.sample_prompt={config.sample_prompt!r}: {e}") from None
  return vocab, ids


def create_model(config, vocab):
  """float32 params; the computation in config.dtype."""
  return models.create(config.model, vocab_size=len(vocab.chars), dtype=models.compute_dtype(config.dtype))


def create_optimizer(config):
  """(tx, lr_schedule) over all num_steps, even under max_steps."""
  lr_schedule = optim.schedule(config, config.num_steps, config.warmup_steps)
  return optim.optimizer(config, lr_schedule), lr_schedule


def build(config, vocab, values: dict | None = None):
  """(model, tx, lr_schedule) of the run, or of a sweep member whose swept fields are `values` (arrays)."""
  config = sweeps.with_values(config, values) if values else config
  return (create_model(config, vocab), *create_optimizer(config))


def init_state(config, mesh, build_fn):
  """(state, train_key, sample_key, state_sharding). One seed gives params, dropout, data order and samples; a
  sweep's state stacks its members'. The state carried from one training window to the next (truncated BPTT) is
  part of the train state: a resumed run continues it; it is split like the batch (each device carries its own
  rows)."""
  def init(seed, values):
    model, tx, _ = build_fn(values)
    init_key, train_key, sample_key = jax.random.split(jax.random.key(seed), 3)
    tokens_BxT = jnp.zeros((config.batch_size, config.seq_len), jnp.int32)
    params = model.init(init_key, tokens_BxT)["params"]
    carry = jax.tree.map(jnp.zeros_like, model.apply({"params": params}, tokens_BxT)[1])
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), {"carry": carry}), train_key, sample_key

  seeds, values = sweeps.member_arrays(config) if sweeps.fields(config) else (np.int32(config.seed), {})
  init, sharding, over_devices = parallel.member_init(init, seeds, values, mesh, config.param_sharding)
  if not over_devices:
    rows = parallel.batch_sharding(mesh, 1 + np.ndim(seeds))  # ([member,] layer, batch, hidden)
    sharding = sharding.replace(model_state={"carry": jax.tree.map(lambda _: rows, sharding.model_state["carry"])})
  replicated = parallel.replicated(mesh)
  state, train_key, sample_key = jax.jit(init, out_shardings=(sharding, replicated, replicated))(seeds, values)
  return state, train_key, sample_key, sharding


def jit_steps(config, mesh, state_sharding, build_fn, chunk: int | None = None):
  """(train_jit, eval_jit) with explicit shardings: the state as placed by init_state, the batch split over the
  devices. train_jit(state, tokens_BxT1, first, key, values) -> (state, metrics); eval_jit(params, carry, inputs,
  targets, mask) -> (carry, summed loss, count), one per member for a sweep (whose step maps over its members,
  `chunk` at a time if given)."""
  sweep = bool(sweeps.fields(config))
  batch_axis = parallel.member_batch_axis(mesh, len(sweeps.members(config)))
  batch, replicated = parallel.batch_sharding(mesh, batch_axis), parallel.replicated(mesh)
  step_fn = functools.partial(train_step, build=build_fn)
  train_jit = jax.jit(parallel.over_members(step_fn, (0, 0, None, 0, 0), chunk) if sweep else step_fn,
                      in_shardings=(state_sharding, batch, replicated, replicated, replicated),
                      out_shardings=(state_sharding, replicated), donate_argnums=0)
  eval_fn = functools.partial(eval_chunk, model=build_fn(None)[0])
  return train_jit, jax.jit(jax.vmap(eval_fn, in_axes=(0, 0, None, None, None)) if sweep else eval_fn)


def saved_vocab(workdir: str | None) -> text_data.Vocab | None:
  """The vocabulary a run saved in its workdir (vocab.json), if any: evaluation, sampling and export of a run
  encode its text as it was trained."""
  path = os.path.join(workdir, "vocab.json") if workdir else ""
  if not os.path.isfile(path):
    return None
  fix = "restore it from a copy of the run, or start the run again with --fresh (which moves the old one aside)"
  try:
    with open(path, encoding="utf-8") as f:
      chars = json.load(f)["chars"]
  except (OSError, ValueError, KeyError, TypeError) as e:  # (JSONDecodeError and UnicodeDecodeError: ValueError)
    raise DataError(f"{path} is damaged ({type(e).__name__}: {e}): {fix}") from None
  if not isinstance(chars, str) or len(chars) < 2 or len(set(chars)) != len(chars):
    raise DataError(f"{path} is not a vocabulary (its \"chars\" must be a string of 2 or more distinct "
                    f"characters): {fix}")
  return text_data.Vocab(chars)


def setup(config: ml_collections.ConfigDict, texts: dict[str, str] | None = None, workdir: str | None = None) -> Task:
  """All a run, its evaluation or a notebook needs, from the blocks above (`.context` holds the vocabulary, the
  ids of each split, the model and the jitted steps). `texts`: {"train", "validation", "test": text} of your own;
  `workdir`: a run whose saved vocabulary to use."""
  mesh = parallel.make_mesh()
  vocab, ids = load_data(config, mesh, texts, saved_vocab(workdir))
  total_steps = config.num_steps if not config.max_steps else min(config.num_steps, config.max_steps)
  build_fn = functools.partial(build, config, vocab)
  model, tx, lr_schedule = build_fn()
  state, train_key, sample_key, sharding = init_state(config, mesh, build_fn)
  train_jit, eval_jit = jit_steps(config, mesh, sharding, build_fn)

  # The batch of each step follows from (seed, step), so a resumed run sees the same data; a sweep's members
  # each read their seed's windows (the epochs' first windows come at the same steps for every seed).
  seeds, values = sweeps.member_arrays(config) if sweeps.fields(config) else (None, {})
  batch_axis = parallel.member_batch_axis(mesh, len(sweeps.members(config)))
  batch, replicated = parallel.batch_sharding(mesh, batch_axis), parallel.replicated(mesh)
  values = jax.tree.map(lambda v: parallel.to_global(v, replicated), values)
  windows = lambda seed, step: text_data.stream_windows(ids["train"], config.batch_size, config.seq_len, seed, step)

  def train_args(state, step):
    if seeds is None:
      tokens, first = windows(config.seed, step)
    else:
      tokens, first = np.stack([windows(int(seed), step)[0] for seed in seeds]), windows(config.seed, step)[1]
    return (state, parallel.to_global(tokens, batch), parallel.to_global(np.bool_(first), replicated), train_key,
            values)

  sweep_summary = ""
  if seeds is not None:
    rebuild = lambda chunk: jit_steps(config, mesh, sharding, build_fn, chunk)[0]
    train_jit, chunk = parallel.fit_members(train_jit, train_args(state, 0), len(seeds), rebuild)
    sweep_summary = sweeps.placement(len(seeds), mesh.size, batch_axis == 0, chunk)
  train_fn = lambda state, step: train_jit(*train_args(state, step))

  eval_fn = lambda params, carry, *arrays: eval_jit(params, carry, *(parallel.to_global(a, batch) for a in arrays))
  evaluate_split = lambda state, split: evaluate(eval_fn, state.params, ids[split], config.eval_streams,
                                                 config.seq_len)

  def finish(state, workdir, member=None):
    params, key = (state.params, sample_key) if member is None else jax.tree.map(lambda x: x[member],
                                                                                 (state.params, sample_key))
    text = sample(model, params, vocab, config.sample_prompt, config.sample_length, config.sample_temperature, key)
    if parallel.is_primary():
      with open(os.path.join(workdir, "sample.txt"), "w") as f:
        f.write(text + "\n")
      of = "" if member is None else f" of member {member}"
      console.info("--- sample%s (temperature %s) ---\n%s\n---", of, config.sample_temperature, text)

  return Task(
      state=state, train_step=train_fn, evaluate=evaluate_split, total_steps=total_steps,
      eval_every_steps=config.eval_every_steps, best_metric="loss", best_mode="min",
      items_per_step=config.batch_size * config.seq_len, rate_name="chars_per_sec",
      summary=f"{config.dataset}: {len(ids['train']):,} train / {len(ids['validation']):,} validation characters, "
              f"vocabulary {len(vocab.chars)}{sweep_summary}",
      record={"data": {"vocab_size": len(vocab.chars), "train_characters": len(ids["train"])}},
      files={"vocab.json": json.dumps({"chars": vocab.chars})}, finish=finish,
      members=sweeps.members(config),
      context=dict(vocab=vocab, ids=ids, model=model, mesh=mesh, tx=tx, lr_schedule=lr_schedule,
                   train_jit=train_jit, eval_jit=eval_jit, train_key=train_key, train_args=train_args))
