"""Character language modelling: `train_and_evaluate(config, workdir)` for the LSTM/RNN on tiny_shakespeare.

Stages: run directory → mesh → input (text, vocabulary) → model → optimizer → jitted steps → checkpoints → loop
→ sample. The same code runs on one device or many, in one process or many (fnets/parallel.py).
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from fnets import models, optim, parallel, runs
from fnets.data import text as text_data
from fnets.run_log import RunLog, TrainWindow


def train_step(params, opt_state, step, tokens_BxT1, key, *, model, tx, lr_schedule):
  """One step on windows of T+1 characters: predict characters 1..T from 0..T-1."""
  dropout_key = jax.random.fold_in(key, step)

  def loss_fn(params):
    logits_BxTxV, _ = model.apply({"params": params}, tokens_BxT1[:, :-1], train=True, rngs={"dropout": dropout_key})
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, tokens_BxT1[:, 1:]).mean()

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": lr_schedule(step)}
  return optax.apply_updates(params, updates), opt_state, metrics


def eval_chunk(params, state, inputs_BxT, targets_BxT, mask_BxT, *, model):
  logits_BxTxV, state = model.apply({"params": params}, inputs_BxT, state)
  nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)
  return state, jnp.sum(nll_BxT * mask_BxT), jnp.sum(mask_BxT)


def evaluate(eval_fn, params, ids, num_streams: int, length: int) -> dict:
  """Loss over the whole text, in nats and bits per character."""
  state, total, count = None, 0.0, 0.0
  for inputs, targets, mask in text_data.stream_chunks(ids, num_streams, length):
    state, nll, n = eval_fn(params, state, inputs, targets, mask)
    total, count = total + nll, count + n
  total, count = parallel.to_host((total, count))
  nats = float(total / count)
  return {"loss": nats, "bits_per_char": nats / math.log(2), "num_chars": int(count)}


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


def setup(config: ml_collections.ConfigDict, workdir: str):
  """Mesh, input, model, optimizer, the initial state and the jitted steps: all a run, its evaluation or a
  notebook needs. Returns (vocab, ids by split, model, state, train_fn, eval_fn, total_steps, sample_key)."""
  # --- Mesh: the global batch (and the evaluation's parallel streams) split over all devices.
  mesh = parallel.make_mesh()
  parallel.check_divisible("batch_size", config.batch_size, mesh)
  parallel.check_divisible("eval_streams", config.eval_streams, mesh)

  # --- Input: vocabulary from the train split, saved with the run.
  texts = text_data.load_text(config.dataset, config.data_dir or None, ("train", "validation", "test"))
  vocab = text_data.Vocab.from_text(texts["train"])
  if parallel.is_primary():
    vocab.save(os.path.join(workdir, "vocab.json"))
  ids = {split: vocab.encode(text) for split, text in texts.items()}
  vocab.encode(config.sample_prompt)  # a prompt the vocabulary cannot encode fails now, not after training
  total_steps = config.num_steps if not config.max_steps else min(config.num_steps, config.max_steps)

  # --- Model: float32 params; the computation in config.dtype.
  model = models.create(config.model, vocab_size=len(vocab.chars), dtype=models.compute_dtype(config.dtype))
  lr_schedule = optim.schedule(config, config.num_steps, steps_per_epoch=1)  # all steps, even under max_steps
  tx = optim.optimizer(config, lr_schedule)

  # --- Optimizer and state: a plain dict, saved whole in checkpoints; one seed gives params, dropout, samples.
  def init(seed):
    init_key, train_key, sample_key = jax.random.split(jax.random.key(seed), 3)
    params = model.init(init_key, jnp.zeros((1, config.seq_len), jnp.int32))["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}, train_key, sample_key

  seed = np.int32(config.seed)
  sharding = parallel.state_shardings(mesh, jax.eval_shape(init, seed)[0], config.param_sharding)
  replicated = parallel.replicated(mesh)
  state, train_key, sample_key = jax.jit(init, out_shardings=(sharding, replicated, replicated))(seed)

  # --- Steps, with explicit shardings: params and optimizer state as placed above, the batch split over devices.
  batch = parallel.batch_sharding(mesh)
  train_jit = jax.jit(functools.partial(train_step, model=model, tx=tx, lr_schedule=lr_schedule),
                      in_shardings=(sharding["params"], sharding["opt_state"], replicated, batch, replicated),
                      out_shardings=(sharding["params"], sharding["opt_state"], replicated), donate_argnums=(0, 1))
  train_fn = lambda params, opt_state, step, tokens: train_jit(params, opt_state, np.int32(step),
                                                               parallel.to_global(tokens, batch), train_key)
  eval_jit = jax.jit(functools.partial(eval_chunk, model=model))
  eval_fn = lambda params, state, *arrays: eval_jit(params, state, *(parallel.to_global(a, batch) for a in arrays))
  return vocab, ids, model, state, train_fn, eval_fn, total_steps, sample_key


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains a character LM; returns the final validation metrics. Writes vocab.json and sample.txt; the
  'test' record is the final model's loss on the test text. Resumes from the workdir's latest checkpoint."""
  runs.start(workdir, config)
  vocab, ids, model, state, train_fn, eval_fn, total_steps, sample_key = setup(config, workdir)
  checkpoints = runs.Checkpoints(workdir, config.keep_checkpoints, best_metric="loss", best_mode="min")
  state = checkpoints.restore(state) or state
  params, opt_state, step = state["params"], state["opt_state"], int(parallel.to_host(state["step"]))
  log = RunLog(workdir, total_steps, resume_step=step)
  evaluate_text = lambda split: evaluate(eval_fn, params, ids[split], config.eval_streams, config.seq_len)

  # --- Loop: the batch of each step follows from (seed, step), so a resumed run sees the same data.
  window, val = TrainWindow(log, config.batch_size * config.seq_len, "chars_per_sec"), None

  def save(metrics=None):
    window.check_finite(step)  # never save a NaN
    step_array = parallel.to_global(np.asarray(step, np.int32), state["step"].sharding)
    checkpoints.save(step, {"step": step_array, "params": params, "opt_state": opt_state}, metrics)

  try:
    with runs.StopSignals() as stop:
      while step < total_steps:
        batch = text_data.random_windows(ids["train"], config.batch_size, config.seq_len + 1, config.seed, step)
        params, opt_state, metrics = train_fn(params, opt_state, step, batch)
        step += 1
        window.add(metrics)
        if step % config.log_every_steps == 0 or step == total_steps:
          window.write(step)
        # A stop at an evaluation step evaluates first, so that a resumed run neither skips nor repeats one.
        if step % config.eval_every_steps == 0 or step == total_steps:
          val = evaluate_text("validation")
          log.write(step, "eval", val)
          save(val)
          window.restart_clock()
        elif stop.signum or (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0):
          save()
        if stop.signum:
          raise runs.Preempted(step, stop.signum)
    if val is None:  # the run had already finished
      val = evaluate_text("validation")
    log.write(step, "test", evaluate_text("test"))
    text = sample(model, params, vocab, config.sample_prompt, config.sample_length, config.sample_temperature,
                  sample_key)
    if parallel.is_primary():
      with open(os.path.join(workdir, "sample.txt"), "w") as f:
        f.write(text + "\n")
      print(f"--- sample (temperature {config.sample_temperature}) ---\n{text}\n---")
    return val
  finally:
    log.close()
    checkpoints.close()


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Validation and test loss of a run's best (else latest) checkpoint, without training; also to eval.json."""
  _, ids, _, state, _, eval_fn, _, _ = setup(config, workdir)
  restored = runs.restore_for_eval(workdir, state, best_metric="loss", best_mode="min")
  out = {"checkpoint_step": int(parallel.to_host(restored["step"]))}
  for split in ("validation", "test"):
    metrics = evaluate(eval_fn, restored["params"], ids[split], config.eval_streams, config.seq_len)
    out.update({f"{split}_{k}": v for k, v in metrics.items()})
  if parallel.is_primary():
    runs.write_json(os.path.join(workdir, "eval.json"), out)
  logging.info("[test] checkpoint step %d: %s", out["checkpoint_step"], out)
  return out
