"""Optax optimizers and learning-rate schedules chosen by config.

Beyond the optimizer itself (all off by default): a learning-rate multiplier for batch-norm parameters
(`bias_lr_scale`, as airbench scales its BN biases' rate by 64), weight decay on the 1-D parameters (biases, BN
shifts and scales) too (`decay_biases`), frozen parameters
(set from data at init, e.g. the CNN's patch-whitening kernel), and `lookahead`: every few steps the weights are
pulled back to a running average of themselves, which is what gets evaluated and saved. All state lives in the
optimizer state, so a resumed run continues exactly."""

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fnets import config as config_lib
from fnets.models.layers import is_off
from fnets.state import path_name

SCHEDULES = ("constant", "cosine", "warmup_cosine", "onecycle")
OPTIMIZERS = ("sgd", "adam", "adamw")


def check(config) -> None:
  """The fields `schedule` and `optimizer` read (the task checks what its warmup is counted in)."""
  config_lib.one_of(config, "optimizer", OPTIMIZERS)
  config_lib.one_of(config, "schedule", SCHEDULES)
  config_lib.require(config, ">0", "learning_rate", "bias_lr_scale")
  config_lib.require(config, ">=0", "weight_decay", "grad_clip_norm", "lookahead_start_epochs",
                     "lookahead_decay_power")
  config_lib.require(config, "[0,1)", "momentum", "lookahead_decay")
  config_lib.require(config, "[0,1]", "lr_start_fraction", "lr_end_fraction")
  config_lib.require(config, "int>=0", "lookahead_every")
  config_lib.require(config, "bool", "nesterov", "decay_biases")


def schedule(config, total_steps: int, warmup_steps) -> optax.Schedule:
  """Learning rate at each step: constant; cosine; linear warmup then cosine; or one-cycle (linear up, linear
  down). Warmup lasts `warmup_steps` (rounded down) and starts from `lr_start_fraction` of the peak; the decaying
  schedules end at `lr_end_fraction` of it.

  optax's schedules, written out (the same arithmetic, so the same numbers): a sweep's learning rate, fractions
  and warmup are arrays, on which optax's branch in Python."""
  peak, kind = config.learning_rate, config.schedule
  start, end = peak * config.lr_start_fraction, peak * config.lr_end_fraction
  static = isinstance(warmup_steps, (int, float))
  warmup = min(int(warmup_steps), total_steps - 1) if static else jnp.minimum(jnp.floor(warmup_steps),
                                                                              total_steps - 1)
  if kind == "constant":
    return lambda step: peak
  if kind == "cosine":
    return _cosine(peak, total_steps, config.lr_end_fraction)
  if kind == "warmup_cosine":
    return _join(_linear(start, peak, warmup), _cosine(peak, total_steps - warmup, end / peak), warmup)
  return _join(_linear(start, peak, warmup), _linear(peak, end, total_steps - warmup), warmup)  # onecycle


def _linear(start, end, steps):
  """From `start` to `end` in `steps` steps, then `end`; `start` throughout if steps ≤ 0 (optax.linear_schedule)."""
  if isinstance(steps, int) and steps <= 0:
    return lambda count: start

  def f(count):
    n = steps if isinstance(steps, int) else jnp.maximum(steps, 1)
    value = (start - end) * (1 - jnp.clip(count, 0, n) / n) + end
    return value if isinstance(steps, int) else jnp.where(steps > 0, value, start)
  return f


def _cosine(peak, steps, alpha):
  """Half a cosine from `peak` down to `alpha · peak` in `steps` steps (optax.cosine_decay_schedule)."""
  steps = float(steps) if isinstance(steps, int) else steps

  def f(count):
    count = jnp.minimum(float(count) if isinstance(count, int) else count, steps)
    return peak * ((1 - alpha) * (0.5 * (1 + jnp.cos(jnp.pi * count / steps))) ** 1.0 + alpha)
  return f


def _join(first, then, boundary):
  """`first` before step `boundary`, `then` (counted from the boundary) after (optax.join_schedules)."""
  return lambda step: jnp.where(step < boundary, first(step), then(step - boundary))


def _decay_mask(params):
  """Weight decay on kernels only: biases and batch-norm scales are left alone."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _bias_mask(params):
  """Biases, batch-norm shifts and scales: the 1-D parameters."""
  return jax.tree.map(lambda p: p.ndim <= 1, params)


def _norm_mask(params):
  """Batch-norm shifts and scales: the parameters of Flax's `BatchNorm_*` modules."""
  return jax.tree_util.tree_map_with_path(lambda path, _: any("BatchNorm" in str(k) for k in path), params)


def _path_mask(paths):
  """True for the leaves whose path ("Whiten/kernel", as state.by_path names them) is in `paths`."""
  return lambda params: jax.tree_util.tree_map_with_path(lambda path, _: path_name(path) in paths, params)


def optimizer(config, learning_rate: optax.Schedule, *, frozen: Mapping[str, int] | None = None,
              total_steps: int = 1, steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """SGD (momentum, Nesterov) with L2 weight decay, Adam (L2), or AdamW (decoupled decay); optional clipping.

  `config.bias_lr_scale` multiplies the step of the batch-norm parameters (airbench's: not the other biases);
  `decay_biases` decays all 1-D parameters as the kernels are, in absolute terms (BN's by decay / scale, then
  scaled). `frozen` maps parameter paths to the
  number of steps they train before they are frozen (0: never trained). `config.lookahead_every` > 0 wraps it
  all in `lookahead` (see there), from `lookahead_start_epochs` on."""
  kind, wd = config.optimizer, config.weight_decay
  bias_scale = config.bias_lr_scale
  # Biases' decay, before the scale; only when asked, so that the default's optimizer state stays as it was.
  other_biases = lambda params: jax.tree.map(lambda b, n: b and not n, _bias_mask(params), _norm_mask(params))
  bias_decay = [optax.add_decayed_weights(wd / bias_scale, _norm_mask),
                optax.add_decayed_weights(wd, other_biases)] if config.decay_biases else []
  if kind == "sgd":
    momentum = None if is_off(config.momentum) else config.momentum  # (a sweep's 0 is a momentum of 0: the same)
    tx = optax.chain(optax.add_decayed_weights(wd, _decay_mask), *bias_decay,
                     optax.sgd(learning_rate, momentum, nesterov=config.nesterov))
  elif kind == "adam":
    tx = optax.chain(optax.add_decayed_weights(wd, _decay_mask), *bias_decay, optax.adam(learning_rate))
  elif kind == "adamw" and not bias_decay:
    tx = optax.adamw(learning_rate, weight_decay=wd, mask=_decay_mask)
  else:  # adamw with the biases' decay: optax.adamw's chain, with the biases' decoupled decay added
    tx = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(wd, _decay_mask), *bias_decay,
                     optax.scale_by_learning_rate(learning_rate))
  if bias_scale != 1.0:
    tx = optax.chain(tx, optax.masked(optax.scale(bias_scale), _norm_mask))
  if not is_off(clip := config.grad_clip_norm):  # (a sweep's 0: no clipping)
    tx = optax.chain(optax.clip_by_global_norm(clip if isinstance(clip, float) else
                                               jnp.where(clip > 0, clip, jnp.inf)), tx)
  if config.get("lookahead_every"):  # (a field of the image tasks only)
    tx = lookahead(tx, every=config.lookahead_every,
                   start_step=int(config.lookahead_start_epochs * steps_per_epoch), total_steps=total_steps,
                   steps_per_epoch=steps_per_epoch, decay=config.lookahead_decay,
                   power=config.lookahead_decay_power)
  # Last, so that a frozen parameter gets exactly zero updates (the average would move it by rounding).
  for steps in sorted(set((frozen or {}).values())):
    paths = {p for p, s in frozen.items() if s == steps}
    stop = optax.set_to_zero() if steps == 0 else optax.scale_by_schedule(
        lambda count, n=steps: (count < n).astype(jnp.float32))
    tx = optax.chain(tx, optax.masked(stop, _path_mask(paths)))
  return tx


class LookaheadState(NamedTuple):
  count: jax.Array  # steps taken
  slow: optax.Params  # the running average the weights are pulled back to
  inner: optax.OptState


def lookahead(inner: optax.GradientTransformation, *, every: int, start_step: int, total_steps: int,
              steps_per_epoch: int, decay: float, power: float) -> optax.GradientTransformation:
  """airbench's lookahead-EMA: the inner optimizer's weights ("fast") take their steps; from `start_step` on, at
  every `every`-th step and at the end of every epoch the average becomes
  slow ← ρ·slow + (1 − ρ)·fast, with ρ = decay^every · (step / total_steps)^power (little averaging early, more
  towards the end), and the weights are set to it. Before `start_step` (and at the first step), slow follows
  fast. The weights after a sync (the end of each epoch, so the end of training) are the average: that is what
  is evaluated and saved. Unlike optax.lookahead, the parameters keep their structure (no fast/slow pair): the
  average is optimizer state. (airbench also averages BN's running statistics; here they stay those of the fast
  weights, which their short memory keeps close.)"""

  def init(params):
    slow = jax.tree.map(lambda p: jnp.array(p, copy=True), params)  # (its own buffers: params may be donated)
    return LookaheadState(jnp.zeros((), jnp.int32), slow, inner.init(params))

  def update(grads, state, params):
    updates, inner_state = inner.update(grads, state.inner, params)
    fast = optax.apply_updates(params, updates)
    t = state.count + 1
    # (Also from its first step on slow follows fast: a run that starts from other weights, init_from, starts its
    # average there, not at the weights the state was made with.)
    started = (t >= start_step) & (t > 1)
    sync = started & ((t % every == 0) | (t % steps_per_epoch == 0))
    rho = jnp.where(started, decay ** every * (t / total_steps) ** power, 0.0)
    slow = jax.tree.map(lambda s, f: jnp.where(sync, rho * s + (1 - rho) * f, jnp.where(started, s, f)),
                        state.slow, fast)
    # At a sync the weights jump to the average; otherwise the inner step stands as it was.
    updates = jax.tree.map(lambda u, s, p: jnp.where(sync, s - p, u), updates, slow, params)
    return updates, LookaheadState(t, slow, inner_state)

  return optax.GradientTransformation(init, update)
