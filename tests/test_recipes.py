"""Each research recipe against its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnets import recipes
from fnets.models import MLP, lstm, rnn


def mlp_setup(B=6):
  model = MLP(hidden_features=(8,), num_classes=3)
  x = jax.random.normal(jax.random.key(0), (B, 5))
  y = jnp.arange(B) % 3
  params = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(x)["params"]  # (jitted: one compile)

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch["x"], train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
  return model, params, {"x": x, "y": y}, loss_fn


def test_per_example_grads_equal_a_loop_over_examples():
  _, params, batch, loss_fn = mlp_setup()
  grads, norms = jax.jit(recipes.per_example_grads, static_argnums=0)(loss_fn, params, batch)
  grad_fn, host = jax.jit(jax.grad(loss_fn)), jax.tree.map(np.asarray, batch)  # (one compile for the 6 examples)
  for b in range(6):
    one = grad_fn(params, {"x": host["x"][b:b + 1], "y": host["y"][b:b + 1]})
    for g, g1 in zip(jax.tree.leaves(grads), jax.tree.leaves(one)):
      np.testing.assert_allclose(g[b], g1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(norms[b], optax.tree.norm(one), rtol=1e-5)


def test_lr_sweep_equals_separate_runs():
  _, params, batch, loss_fn = mlp_setup()
  batches = jax.tree.map(lambda x: jnp.stack([x, x[::-1], x]), batch)  # 3 steps
  rates = [0.01, 0.1, 0.5]
  swept, losses = recipes.lr_sweep(loss_fn, params, batches, rates)
  assert losses.shape == (3, 3)
  host = jax.tree.map(np.asarray, batches)

  @jax.jit
  def sgd_step(p, s, batch, lr):  # (one compile for every rate and step)
    loss, grads = jax.value_and_grad(loss_fn)(p, batch)
    updates, s = optax.sgd(lr, momentum=0.9).update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  for k, lr in enumerate(rates):
    p = params
    s = optax.sgd(lr, momentum=0.9).init(p)
    for step in range(3):
      p, s, loss = sgd_step(p, s, jax.tree.map(lambda x: x[step], host), lr)
      np.testing.assert_allclose(losses[k, step], loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(swept), jax.tree.leaves(p)):
      np.testing.assert_allclose(a[k], b, rtol=1e-5, atol=1e-6)


def test_hvp_equals_finite_differences_of_gradients():
  with jax.enable_x64(True):  # a smooth two-layer tanh network in float64, so finite differences are exact enough
    k = jax.random.split(jax.random.key(0), 5)
    params = {"w1": jax.random.normal(k[0], (5, 8), jnp.float64), "w2": jax.random.normal(k[1], (8, 3), jnp.float64)}
    x, y = jax.random.normal(k[2], (6, 5), jnp.float64), jnp.arange(6) % 3
    f = lambda p: optax.softmax_cross_entropy_with_integer_labels(jnp.tanh(x @ p["w1"]) @ p["w2"], y).mean()
    v = {"w1": jax.random.normal(k[3], (5, 8), jnp.float64), "w2": jax.random.normal(k[4], (8, 3), jnp.float64)}
    eps = 1e-5
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, v)
    grad = jax.jit(jax.grad(f))
    fd = jax.tree.map(lambda a, b: (a - b) / (2 * eps), grad(shifted(1)), grad(shifted(-1)))
    for a, b in zip(jax.tree.leaves(jax.jit(recipes.hvp, static_argnums=0)(f, params, v)), jax.tree.leaves(fd)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_sharpness_finds_the_top_eigenvalue_of_a_quadratic():
  eigenvalues = jnp.array([5.0, -1.0, 2.0, 0.5])
  q = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (4, 4)))[0]
  A = q @ jnp.diag(eigenvalues) @ q.T
  loss = lambda p: 0.5 * p["w"] @ A @ p["w"] + jnp.sum(p["w"])
  top = recipes.sharpness(loss, {"w": jnp.ones(4)}, jax.random.key(1), num_iters=100)
  np.testing.assert_allclose(top, 5.0, rtol=1e-3)


def test_saliency_of_a_linear_model_is_its_weights():
  w = jax.random.normal(jax.random.key(0), (4, 4, 2, 3))  # H, W, C, classes
  logits_fn = lambda x: jnp.einsum("bhwc,hwck->bk", x, w)
  x = jax.random.normal(jax.random.key(1), (2, 4, 4, 2))
  labels = jnp.array([2, 0])
  s = recipes.saliency(logits_fn, x, labels)
  assert s.shape == (2, 4, 4)
  for b in range(2):
    np.testing.assert_allclose(s[b], jnp.max(jnp.abs(w[..., labels[b]]), axis=-1), rtol=1e-6)


def test_lstm_trace_matches_apply_and_gate_ranges():
  params = lstm.init(jax.random.key(0), 3, 4)
  x = jax.random.normal(jax.random.key(1), (2, 7, 3))
  trace = jax.jit(recipes.lstm_trace)(params[0], x)
  y, state = jax.jit(lstm.apply)(params, x)
  np.testing.assert_allclose(trace["h"], y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(trace["c"][:, -1], state.c[0], rtol=1e-5, atol=1e-6)
  for gate in "fio":
    assert np.all((trace[gate] > 0) & (trace[gate] < 1))
  assert np.all(np.abs(trace["g"]) < 1)


def test_gradient_flow_vanishes_for_the_rnn_not_the_lstm():
  T, D, H = 100, 8, 32
  x = jax.random.normal(jax.random.key(0), (4, T, D))
  loss = lambda h: jnp.sum(h ** 2)
  flow = {}
  for cell, module in (("lstm", lstm), ("rnn", rnn)):
    layer = module.init(jax.random.key(1), D, H)[0]
    flow[cell] = jax.jit(recipes.gradient_flow, static_argnums=(0, 3))(cell, layer, x, loss)
    assert flow[cell].shape == (T,)
    # The last step's gradient is the loss's own: ∂L/∂h_T = 2 h_T.
    h_last = jax.jit(recipes._hidden_states, static_argnums=0)(cell, layer, x, jnp.zeros((T, 4, H)))[-1]
    np.testing.assert_allclose(flow[cell][-1], jnp.mean(jnp.linalg.norm(2 * h_last, axis=-1)), rtol=1e-5)
  ratio_back = lambda f: f[0] / f[-1]  # 99 steps back, relative to the last step
  assert ratio_back(flow["rnn"]) < 1e-3
  assert ratio_back(flow["lstm"]) > 100 * ratio_back(flow["rnn"])
