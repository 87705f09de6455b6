"""The LSTM and the vanilla RNN: equations, fast path, gradients, masking, and JAX transformations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fnets.models import lstm, rnn


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def numpy_lstm(params, x_BxTxD, c0, h0):
  """Step-by-step NumPy reference of the textbook equations, gate order (i, f, g, o)."""
  x = np.asarray(x_BxTxD, np.float64)
  cs, hs = [], []
  for l, layer in enumerate(params):
    W, U, b = (np.asarray(layer[k], np.float64) for k in "WUb")
    c, h = np.asarray(c0[l], np.float64), np.asarray(h0[l], np.float64)
    H = U.shape[0]
    ys = []
    for t in range(x.shape[1]):
      z = x[:, t] @ W + h @ U + b
      i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
      c = f * c + i * g
      h = o * np.tanh(c)
      ys.append(h)
    x = np.stack(ys, 1)
    cs.append(c)
    hs.append(h)
  return x, np.stack(cs), np.stack(hs)


def numpy_rnn(params, x_BxTxD, h0):
  x = np.asarray(x_BxTxD, np.float64)
  hs = []
  for l, layer in enumerate(params):
    W, U, b = (np.asarray(layer[k], np.float64) for k in "WUb")
    h, ys = np.asarray(h0[l], np.float64), []
    for t in range(x.shape[1]):
      h = np.tanh(x[:, t] @ W + h @ U + b)
      ys.append(h)
    x = np.stack(ys, 1)
    hs.append(h)
  return x, np.stack(hs)


def setup(num_layers=2, B=3, T=6, D=4, H=5):
  keys = jax.random.split(jax.random.key(0), 4)
  params = lstm.init(keys[0], D, H, num_layers)
  # Random biases too, so that every gate's bias is exercised.
  params = [dict(p, b=jax.random.normal(k, p["b"].shape)) for p, k in zip(params, jax.random.split(keys[3], 9))]
  x = jax.random.normal(keys[1], (B, T, D))
  c0, h0 = jax.random.normal(keys[2], (2, num_layers, B, H))
  return params, x, lstm.State(c0, h0)


@pytest.mark.parametrize("unroll", [1, 4])
def test_lstm_fast_path_equals_numpy_equations(unroll):
  params, x, state = setup()
  y, final = jax.jit(lstm.apply, static_argnames="unroll")(params, x, state, unroll=unroll)
  y_ref, c_ref, h_ref = numpy_lstm(params, x, state.c, state.h)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final.c, c_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final.h, h_ref, rtol=1e-5, atol=1e-6)


def test_lstm_cell_is_the_per_gate_reference_of_the_fast_path():
  params, x, state = setup(num_layers=1)
  c, h = state.c[0], state.h[0]
  for t in range(x.shape[1]):
    c, h = lstm.cell(params[0], c, h, x[:, t])
  _, final = lstm.apply(params, x, state)
  np.testing.assert_allclose(final.c[0], c, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final.h[0], h, rtol=1e-5, atol=1e-6)


def test_lstm_init_layout_and_forget_bias():
  params = lstm.init(jax.random.key(0), 7, 5, num_layers=2, forget_bias=1.0)
  assert [jax.tree.map(jnp.shape, p) for p in params] == [
      {"W": (7, 20), "U": (5, 20), "b": (20,)}, {"W": (5, 20), "U": (5, 20), "b": (20,)}]
  i, f, g, o = lstm.gate_split(params[0]["b"])
  assert np.all(f == 1.0) and np.all(i == 0) and np.all(g == 0) and np.all(o == 0)


def test_rnn_equals_numpy_equations():
  params = rnn.init(jax.random.key(0), 4, 5, num_layers=2)
  x = jax.random.normal(jax.random.key(1), (3, 6, 4))
  h0 = jax.random.normal(jax.random.key(2), (2, 3, 5))
  y, h = jax.jit(rnn.apply)(params, x, h0)
  y_ref, h_ref = numpy_rnn(params, x, h0)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("module", [lstm, rnn])
def test_gradients_match_finite_differences(module):
  with jax.enable_x64(True):
    params = jax.tree.map(lambda a: a.astype(jnp.float64), module.init(jax.random.key(0), 3, 4, num_layers=2))
    x = jax.random.normal(jax.random.key(1), (2, 5, 3), jnp.float64)
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], jnp.float64)
    state = jax.tree.map(lambda a: a + 0.3, module.zero_state(params, 2))

    def loss(params, x, state):
      y, final = module.apply(params, x, state, mask_BxT=mask)
      return jnp.sum(jnp.sin(y)) + sum(jnp.sum(s ** 2) for s in jax.tree.leaves(final))

    check_grads(loss, (params, x, state), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_lstm_grad_of_custom_vjp_equals_autodiff_of_the_cell():
  params, x, state = setup(num_layers=1)

  def loop_loss(params):
    c, h, total = state.c[0], state.h[0], 0.0
    for t in range(x.shape[1]):
      c, h = lstm.cell(params[0], c, h, x[:, t])
      total += jnp.sum(jnp.cos(h))
    return total + jnp.sum(c)

  def fast_loss(params):
    y, final = lstm.apply(params, x, state)
    return jnp.sum(jnp.cos(y)) + jnp.sum(final.c)

  g_fast, g_loop = jax.grad(fast_loss)(params), jax.grad(loop_loss)(params)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_loop)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("module", [lstm, rnn])
def test_padded_steps_keep_the_state_and_output_zeros(module):
  params = module.init(jax.random.key(0), 4, 5, num_layers=2)
  x = jax.random.normal(jax.random.key(1), (3, 6, 4))
  lengths = np.array([6, 4, 1])
  mask = (np.arange(6)[None] < lengths[:, None]).astype(np.float32)
  y, final = module.apply(params, x, mask_BxT=mask)
  for b, n in enumerate(lengths):
    y_b, final_b = module.apply(params, x[b:b + 1, :n])
    np.testing.assert_allclose(y[b, :n], y_b[0], rtol=1e-5, atol=1e-6)
    assert np.all(y[b, n:] == 0)
    for s, s_b in zip(jax.tree.leaves(final), jax.tree.leaves(final_b)):
      np.testing.assert_allclose(s[:, b], s_b[:, 0], rtol=1e-5, atol=1e-6)


def test_final_state_continues_the_sequence():
  """Running two halves with the state carried over equals running the whole (truncated BPTT, sampling)."""
  params, x, _ = setup()
  y_all, final_all = lstm.apply(params, x)
  y1, mid = lstm.apply(params, x[:, :3])
  y2, final = lstm.apply(params, x[:, 3:], mid)
  np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y_all, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final.h, final_all.h, rtol=1e-5, atol=1e-6)


def test_lstm_composes_with_jit_grad_and_vmap_over_parameter_sets():
  _, x, _ = setup()
  stacked = jax.vmap(lambda k: lstm.init(k, 4, 5, 2))(jax.random.split(jax.random.key(7), 3))
  loss = lambda params: jnp.mean(lstm.apply(params, x)[0] ** 2)
  losses, grads = jax.jit(jax.vmap(jax.value_and_grad(loss)))(stacked)
  assert losses.shape == (3,)
  for k in range(3):
    one = jax.tree.map(lambda a: a[k], stacked)
    l_k, g_k = jax.value_and_grad(loss)(one)
    np.testing.assert_allclose(losses[k], l_k, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(g_k)):
      np.testing.assert_allclose(a[k], b, rtol=1e-4, atol=1e-6)


def test_dropout_between_layers_only_in_training():
  params, x, _ = setup()
  plain, _ = lstm.apply(params, x)
  dropped, _ = lstm.apply(params, x, dropout=0.5, key=jax.random.key(0))
  assert not np.allclose(plain, dropped)
  np.testing.assert_array_equal(plain, lstm.apply(params, x, dropout=0.5)[0])  # no key: no dropout
