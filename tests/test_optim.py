"""Schedules and optimizers chosen by config."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fnets import optim
from fnets.errors import ConfigError
from fnets.experiments import common


def config(**kw):
  c = common.optimizer(ml_collections.ConfigDict())
  c.update({"learning_rate": 1.0, "schedule": "constant", "weight_decay": 0.0, **kw})
  return c


def test_schedules():
  lr = lambda kind: [float(optim.schedule(config(schedule=kind), 100, 10)(s)) for s in (0, 5, 10, 55, 100)]
  assert lr("constant") == [1.0] * 5
  cosine = lr("cosine")
  assert cosine[0] == 1.0 and cosine[-1] == pytest.approx(0.0, abs=1e-6) and cosine[3] < cosine[2]
  warm = lr("warmup_cosine")  # 10 warmup steps from 0.1 to 1, then cosine to 0
  assert warm[0] == pytest.approx(0.1) and warm[1] == pytest.approx(0.55) and warm[2] == pytest.approx(1.0)
  assert warm[-1] == pytest.approx(0.0, abs=1e-6)
  one = lr("onecycle")  # linear up over 10 steps, linear down to 0 at step 100
  assert one[:3] == pytest.approx([0.1, 0.55, 1.0]) and one[3] == pytest.approx(0.5) and one[4] == pytest.approx(0.0)
  with pytest.raises(ConfigError, match="schedule='step': unknown choice; choose one of: constant, cosine"):
    optim.check(config(schedule="step"))


def quadratic_params():
  return {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}


def one_update(cfg, grads):
  tx = optim.optimizer(cfg, cfg.learning_rate)
  params = jax.tree.map(jnp.ones_like, grads)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_sgd_weight_decay_spares_biases():
  zero = jax.tree.map(jnp.zeros_like, quadratic_params())
  updates = one_update(config(weight_decay=0.1, momentum=0.0, nesterov=False), zero)
  np.testing.assert_allclose(updates["kernel"], -0.1 * np.ones((2, 2)))
  np.testing.assert_allclose(updates["bias"], 0.0)


def test_nesterov_adam_adamw_and_clipping():
  grads = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full(2, 4.0)}
  # Nesterov SGD's first step: -(g + momentum * g) * lr.
  np.testing.assert_allclose(one_update(config(), grads)["bias"], -(4.0 + 0.9 * 4.0))
  # Adam's first step is -lr * sign(g); AdamW adds decoupled decay -lr * wd * w on kernels only.
  np.testing.assert_allclose(one_update(config(optimizer="adam"), grads)["bias"], -1.0, rtol=1e-4)
  adamw = one_update(config(optimizer="adamw", weight_decay=0.5), grads)
  np.testing.assert_allclose(adamw["kernel"], -1.5, rtol=1e-4)
  np.testing.assert_allclose(adamw["bias"], -1.0, rtol=1e-4)
  # Clipping to global norm 1 scales the gradient before the optimizer.
  clipped = one_update(config(momentum=0.0, nesterov=False, grad_clip_norm=1.0), grads)
  norm = float(optax.tree.norm(grads))
  np.testing.assert_allclose(clipped["bias"], -4.0 / norm, rtol=1e-6)
  with pytest.raises(ConfigError, match="optimizer='lion': unknown choice; choose one of: sgd, adam, adamw"):
    optim.check(config(optimizer="lion"))


def test_schedule_start_and_end_fractions():
  lr = [float(optim.schedule(config(schedule="onecycle", lr_start_fraction=0.2, lr_end_fraction=0.07), 100, 10)(s))
        for s in (0, 10, 100)]
  assert lr == pytest.approx([0.2, 1.0, 0.07])


def test_bias_lr_scale_keeps_the_bias_decay_and_frozen_paths_get_no_update():
  grads = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full(2, 4.0), "BatchNorm_0": {"bias": jnp.full(2, 5.0)}}
  cfg = config(momentum=0.0, nesterov=False, weight_decay=0.1, bias_lr_scale=8.0, decay_biases=True)
  updates = one_update(cfg, grads)
  np.testing.assert_allclose(updates["kernel"], -(3.0 + 0.1))
  np.testing.assert_allclose(updates["bias"], -(4.0 + 0.1), rtol=1e-6)  # a conv/dense bias: the kernels' rate
  np.testing.assert_allclose(updates["BatchNorm_0"]["bias"], -(8 * 5.0 + 0.1), rtol=1e-6)  # 8× the step, same decay
  grads = {"kernel": grads["kernel"], "bias": grads["bias"]}
  tx = optim.optimizer(config(), 1.0, frozen={"kernel": 0, "bias": 2})
  params = quadratic_params()
  state = tx.init(params)
  bias_moves = []
  for _ in range(4):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    bias_moves.append(bool(np.any(updates["bias"])))
    np.testing.assert_array_equal(params["kernel"], 1.0)  # frozen from the start: exactly unchanged
  assert bias_moves == [True, True, False, False]  # trains for 2 steps, then frozen


def test_lookahead_pulls_the_weights_to_their_running_average():
  # Plain SGD with rate 1 on a constant gradient of -1: each inner step adds 1 to the weight.
  cfg = config(momentum=0.0, nesterov=False, lookahead_every=2, lookahead_start_epochs=0.5,
               lookahead_decay=0.9, lookahead_decay_power=2.0)
  tx = optim.optimizer(cfg, 1.0, total_steps=8, steps_per_epoch=4)  # starts at step 2; epochs end at 4, 8
  params, state, got = {"w": jnp.zeros(())}, None, []
  state = tx.init(params)
  for _ in range(8):
    updates, state = tx.update({"w": -jnp.ones(())}, state, params)
    params = optax.apply_updates(params, updates)
    got.append(float(params["w"]))
  w, slow, want = 0.0, 0.0, []
  for t in range(1, 9):
    w += 1
    if t < 2:
      slow = w
    elif t % 2 == 0:
      rho = 0.9 ** 2 * (t / 8) ** 2
      w = slow = rho * slow + (1 - rho) * w
    want.append(w)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[-1] < 8 - 1  # the average lags the fast weights
