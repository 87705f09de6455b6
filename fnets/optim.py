"""Optax optimizers and learning-rate schedules chosen by config."""

import jax
import optax

SCHEDULES = ("constant", "cosine", "warmup_cosine", "onecycle")
OPTIMIZERS = ("sgd", "adam", "adamw")


def schedule(config, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """Learning rate at each step: constant; cosine to 0; linear warmup then cosine; or one-cycle (linear up,
  linear down to 0). Warmup lasts `config.warmup_epochs` epochs and starts from a tenth of the peak."""
  peak, kind = config.learning_rate, config.schedule
  warmup = min(int(config.warmup_epochs * steps_per_epoch), total_steps - 1)
  if kind == "constant":
    return optax.constant_schedule(peak)
  if kind == "cosine":
    return optax.cosine_decay_schedule(peak, total_steps)
  if kind == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(peak / 10, peak, warmup, total_steps)
  if kind == "onecycle":
    return optax.join_schedules([optax.linear_schedule(peak / 10, peak, warmup),
                                 optax.linear_schedule(peak, 0.0, total_steps - warmup)], [warmup])
  raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")


def _decay_mask(params):
  """Weight decay on kernels only: biases and batch-norm scales are left alone."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def optimizer(config, learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum, Nesterov) with L2 weight decay, Adam (L2), or AdamW (decoupled decay); optional clipping."""
  kind, wd = config.optimizer, config.weight_decay
  if kind == "sgd":
    tx = optax.chain(optax.add_decayed_weights(wd, _decay_mask),
                     optax.sgd(learning_rate, config.momentum or None, nesterov=config.nesterov))
  elif kind == "adam":
    tx = optax.chain(optax.add_decayed_weights(wd, _decay_mask), optax.adam(learning_rate))
  elif kind == "adamw":
    tx = optax.adamw(learning_rate, weight_decay=wd, mask=_decay_mask)
  else:
    raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx
