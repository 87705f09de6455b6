"""The LSTM and the vanilla RNN: equations, fast path, gradients, masking, and JAX transformations."""

import ast
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fnets.models import lstm, rnn, sequence


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


@pytest.mark.parametrize("unroll,impl", [(1, "fused"), (4, "fused"), (4, "scan")])
def test_lstm_equals_numpy_equations(unroll, impl):
  params, x, state = setup()
  y, final = jax.jit(lstm.apply, static_argnames=("unroll", "impl"))(params, x, state, unroll=unroll, impl=impl)
  y_ref, c_ref, h_ref = numpy_lstm(params, x, state.c, state.h)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final.c, c_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final.h, h_ref, rtol=1e-5, atol=1e-6)


def test_lstm_init_layout_and_forget_bias():
  params = lstm.init(jax.random.key(0), 7, 5, num_layers=2, forget_bias=1.0)
  assert [jax.tree.map(jnp.shape, p) for p in params] == [
      {"W": (7, 20), "U": (5, 20), "b": (20,)}, {"W": (5, 20), "U": (5, 20), "b": (20,)}]
  i, f, g, o = lstm.gate_split(params[0]["b"])
  assert np.all(f == 1.0) and np.all(i == 0) and np.all(g == 0) and np.all(o == 0)


@pytest.mark.parametrize("impl", rnn.IMPLS)
def test_rnn_equals_numpy_equations(impl):
  params = rnn.init(jax.random.key(0), 4, 5, num_layers=2)
  x = jax.random.normal(jax.random.key(1), (3, 6, 4))
  h0 = jax.random.normal(jax.random.key(2), (2, 3, 5))
  y, h = jax.jit(rnn.apply, static_argnames="impl")(params, x, h0, impl=impl)
  y_ref, h_ref = numpy_rnn(params, x, h0)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["fused", "scan"])
@pytest.mark.parametrize("module", [lstm, rnn])
def test_derivatives_match_central_finite_differences(module, impl):
  """Reverse mode, and forward mode (jvp), against central differences (float64)."""
  with jax.enable_x64(True):
    params = jax.tree.map(lambda a: a.astype(jnp.float64), module.init(jax.random.key(0), 3, 4, num_layers=2))
    x = jax.random.normal(jax.random.key(1), (2, 5, 3), jnp.float64)
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], jnp.float64)
    state = jax.tree.map(lambda a: a + 0.3, module.zero_state(params, 2))

    def loss(params, x, state):
      y, final = module.apply(params, x, state, mask_BxT=mask, impl=impl)
      return jnp.sum(jnp.sin(y)) + sum(jnp.sum(s ** 2) for s in jax.tree.leaves(final))

    # Reverse mode of the scan path: test_fused_and_scan_paths_agree_in_outputs_final_state_and_gradients.
    modes = {"fused": ["fwd", "rev"], "scan": ["fwd"]}[impl]
    check_grads(jax.jit(loss), (params, x, state), order=1, modes=modes, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("module", [lstm, rnn])
def test_fused_and_scan_paths_agree_in_outputs_final_state_and_gradients(module):
  """The fused path (for the LSTM: the hand-written backward) against the reference (`lax.scan` over `cell`, JAX's
  autodiff): 2 layers, padding and an initial state; gradients of params, inputs and initial state."""
  params, x, state = setup(num_layers=2, B=3, T=7)
  if module is rnn:
    params, state = rnn.init(jax.random.key(0), 4, 5, num_layers=2), state.h
  mask = jnp.array([[1] * 7, [1] * 5 + [0] * 2, [1] + [0] * 6], jnp.float32)

  def loss_and_outputs(impl, params, x, state):
    y, final = module.apply(params, x, state, mask_BxT=mask, impl=impl)
    return jnp.sum(jnp.cos(y)) + sum(jnp.sum(jnp.sin(s) * s) for s in jax.tree.leaves(final)), (y, final)

  results = {impl: jax.jit(jax.value_and_grad(functools.partial(loss_and_outputs, impl), argnums=(0, 1, 2),
                                              has_aux=True))(params, x, state) for impl in module.IMPLS}
  (_, outputs), grads = results["fused"]
  (_, outputs_ref), grads_ref = results["scan"]
  for a, b in zip(jax.tree.leaves(outputs), jax.tree.leaves(outputs_ref)):  # y, and the final state
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def small_f64(module, num_layers=2, B=2, T=4, D=3, H=3):
  params = jax.tree.map(lambda a: a.astype(jnp.float64), module.init(jax.random.key(0), D, H, num_layers))
  x = jax.random.normal(jax.random.key(1), (B, T, D), jnp.float64)
  return params, x


@pytest.mark.parametrize("module", [lstm, rnn])
def test_forward_mode_through_the_scan_path(module):
  """jacfwd (forward mode: vmap of jvp) equals jacrev (reverse mode); jax.linearize's linear map is the Jacobian's.
  (jvp against finite differences: test_derivatives_match_central_finite_differences.)"""
  with jax.enable_x64(True):
    params, x = small_f64(module)
    mask = jnp.array([[1, 1, 1, 1], [1, 1, 0, 0]], jnp.float64)
    f = lambda x: module.apply(params, x, mask_BxT=mask, impl="scan")[0]
    jacobian = jax.jit(jax.jacfwd(f))(x)
    np.testing.assert_allclose(jacobian, jax.jit(jax.jacrev(f))(x), rtol=1e-10, atol=1e-12)
    t = jax.random.normal(jax.random.key(2), x.shape, jnp.float64)
    linearized = jax.jit(lambda x, t: jax.linearize(f, x)[1](t))(x, t)
    np.testing.assert_allclose(linearized, jnp.tensordot(jacobian, t, x.ndim), rtol=1e-10, atol=1e-12)


def test_lstm_hessian_and_grad_of_grad():
  """jax.hessian (forward over reverse; for the fused path, forward mode over its backward pass) is symmetric and
  the same for both paths; grad of grad (reverse over reverse) gives its quadratic form: d²/ds² f(s·x) = xᵀHx."""
  with jax.enable_x64(True):
    params, x = small_f64(lstm, B=1, T=3)
    f = lambda x, impl: jnp.sum(jnp.sin(lstm.apply(params, x, impl=impl)[0]))
    hessians = {impl: jax.jit(jax.hessian(f), static_argnums=1)(x, impl).reshape(x.size, x.size)
                for impl in lstm.IMPLS}
    np.testing.assert_allclose(hessians["fused"], hessians["fused"].T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hessians["fused"], hessians["scan"], rtol=1e-9, atol=1e-12)
    curvature = jax.jit(jax.grad(jax.grad(lambda s: f(s * x, "fused"))))(1.0)
    np.testing.assert_allclose(curvature, x.ravel() @ hessians["scan"] @ x.ravel(), rtol=1e-9)


@pytest.mark.parametrize("module", [lstm, rnn])
def test_padded_steps_keep_the_state_and_output_zeros(module):
  params = module.init(jax.random.key(0), 4, 5, num_layers=2)
  x = jax.random.normal(jax.random.key(1), (3, 6, 4))
  lengths = np.array([6, 4, 1])
  mask = (np.arange(6)[None] < lengths[:, None]).astype(np.float32)
  apply = jax.jit(module.apply)
  y, final = apply(params, x, mask_BxT=mask)
  for b, n in enumerate(lengths):
    y_b, final_b = apply(params, x[b:b + 1, :n])
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
  value_and_grad = jax.jit(jax.value_and_grad(loss))
  for k in range(3):
    one = jax.tree.map(lambda a: a[k], stacked)
    l_k, g_k = value_and_grad(one)
    np.testing.assert_allclose(losses[k], l_k, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(g_k)):
      np.testing.assert_allclose(a[k], b, rtol=1e-4, atol=1e-6)


def test_dropout_between_layers_only_in_training():
  params, x, _ = setup()
  plain, _ = lstm.apply(params, x)
  dropped, _ = lstm.apply(params, x, dropout=0.5, key=jax.random.key(0))
  assert not np.allclose(plain, dropped)
  np.testing.assert_array_equal(plain, lstm.apply(params, x, dropout=0.5)[0])  # no key: no dropout
  # The reference path drops the same units.
  np.testing.assert_allclose(dropped, lstm.apply(params, x, dropout=0.5, key=jax.random.key(0), impl="scan")[0],
                             rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_models_choose_the_path_with_config_model_impl(cell):
  """`model.impl` of a config reaches the layers: the same logits either way (forward mode through both:
  tests/test_forward_mode.py). The Flax layers keep their parameter paths (LSTM_0/cells, RNN_0/cells: checkpoints
  and torch_state_dict depend on them); the RNN has no forget_bias."""
  from fnets import models
  tokens = jnp.array([[1, 2, 3, 4]])
  model = {impl: models.create(dict(name="char_lm", embed_dim=4, hidden_size=5, cell=cell, impl=impl), vocab_size=7)
           for impl in lstm.IMPLS}
  variables = model["fused"].init(jax.random.key(0), tokens)
  assert "cells" in variables["params"][{"lstm": "LSTM_0", "rnn": "RNN_0"}[cell]]
  logits = {impl: m.apply(variables, tokens)[0] for impl, m in model.items()}
  np.testing.assert_allclose(logits["fused"], logits["scan"], rtol=1e-5, atol=1e-6)
  assert hasattr(sequence.LSTM(5), "forget_bias") and not hasattr(sequence.RNN(5), "forget_bias")


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_truncated_bptt_step_continues_the_stream(cell):
  """char_lm.train_step carries the final state into the next window (the loss of window 2 is that of the whole text
  read at once), resets it where `first`, and stops the gradient at the window's start."""
  import optax
  from fnets import models
  from fnets.state import TrainState
  from fnets.tasks import char_lm
  model = models.create(dict(name="char_lm", embed_dim=4, hidden_size=5, cell=cell), vocab_size=7)
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 7)  # two windows of 4, sharing character 4
  apply = jax.jit(model.apply)  # (each model call below jitted: eager, the scan's ops compile one by one)
  params = jax.jit(model.init)(jax.random.key(0), tokens[:, :4])["params"]
  tx = optax.sgd(0.0)  # the params stay, so both steps see the same model
  carry = jax.tree.map(jnp.zeros_like, apply({"params": params}, tokens[:, :4])[1])
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), {"carry": carry})
  step = jax.jit(lambda *args: char_lm.train_step(*args, {}, build=lambda values: (model, tx, lambda s: 0.0)))
  state, _ = step(state, tokens[:, :5], True, jax.random.key(2))
  continued, metrics = step(state, tokens[:, 4:], False, jax.random.key(2))
  logits = apply({"params": params}, tokens[:, :-1])[0]
  whole = optax.softmax_cross_entropy_with_integer_labels(logits[:, 4:], tokens[:, 5:]).mean()
  np.testing.assert_allclose(metrics["loss"], whole, rtol=1e-6)
  _, reset = step(state, tokens[:, 4:], True, jax.random.key(2))
  fresh = optax.softmax_cross_entropy_with_integer_labels(apply({"params": params}, tokens[:, 4:-1])[0],
                                                          tokens[:, 5:]).mean()
  np.testing.assert_allclose(reset["loss"], fresh, rtol=1e-6)
  assert not np.allclose(metrics["loss"], reset["loss"])
  # The gradient is that of window 2 alone given the carried state: none flows back into window 1.
  grads = jax.jit(jax.grad(lambda p, c: optax.softmax_cross_entropy_with_integer_labels(
      model.apply({"params": p}, tokens[:, 4:-1], c)[0], tokens[:, 5:]).mean()))(params, state.model_state["carry"])
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5)


LOOP_NODES = (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ListComp,
              ast.SetComp, ast.DictComp, ast.GeneratorExp)


def cell_loops(source: str) -> list[int]:
  """Lines where `lstm.cell` or `rnn.cell` (or a name bound to an expression that holds one) is used inside a loop
  or a function body (a scan step): a private loop over the cell equations."""
  tree = ast.parse(source)
  is_cell = lambda node: (isinstance(node, ast.Attribute) and node.attr == "cell"
                          and isinstance(node.value, (ast.Name, ast.Attribute))
                          and getattr(node.value, "id", getattr(node.value, "attr", None)) in ("lstm", "rnn"))
  aliases = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and any(map(is_cell, ast.walk(node.value)))
             for target in node.targets if isinstance(target, ast.Name)}
  found = []

  def visit(node, inside_loop):
    if inside_loop and (is_cell(node) or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                                          and node.func.id in aliases)):
      found.append(node.lineno)
    for child in ast.iter_child_nodes(node):
      visit(child, inside_loop or isinstance(node, LOOP_NODES))

  visit(tree, False)
  return found


def test_cell_loop_finder():
  assert cell_loops("for t in ts:\n  c, h = lstm.cell(p, c, h, x[t])") == [2]
  assert cell_loops("def step(carry, x):\n  return rnn.cell(p, carry, x)") == [2]
  assert cell_loops("cell = jax.jit(lstm.cell)\nfor t in ts:\n  c, h = cell(p, c, h, x)") == [3]
  assert cell_loops("c, h = jax.jit(lstm.cell)(p, c, h, x)\nprint(inspect.getsource(models.lstm.cell))") == []


def test_no_loop_over_the_cell_outside_fnets_models():
  """The recipes, notebooks, benchmarks and tests run the library's reference path (`lstm.apply(impl="scan")`,
  `lstm.trace_layer`), not their own loops over `lstm.cell` / `rnn.cell`: one home, in fnets/models/."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  loops = []
  for directory, subdirectories, files in os.walk(root):
    subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and d != "__pycache__"]
    if os.path.relpath(directory, root).replace(os.sep, "/").startswith("fnets/models"):
      continue
    for name in files:
      path = os.path.join(directory, name)
      if name.endswith(".py"):
        sources = [open(path).read()]
      elif name.endswith(".ipynb"):
        cells = json.load(open(path))["cells"]
        sources = ["".join(line for line in cell["source"] if not line.lstrip().startswith(("%", "!")))
                   for cell in cells if cell["cell_type"] == "code"]
      else:
        continue
      loops += [f"{os.path.relpath(path, root)}:{line}" for source in sources for line in cell_loops(source)]
  assert not loops, f"private loops over the LSTM/RNN cell (use lstm.apply(impl='scan') or trace_layer): {loops}"


def test_bfloat16_gates_take_g_from_tanh():
  """g = tanh(z) in bfloat16 keeps its relative precision near 0 (2σ(2z) − 1 rounded g to steps of ~4e-3 there)."""
  z = jnp.tile(jnp.array([1e-3, -2e-3, 5e-3, 0.3], jnp.bfloat16)[:, None], (4, 1))  # (4H = 16, B = 1)
  i, f, g, o = lstm.gate_split(lstm._gates(z), axis=0)
  np.testing.assert_array_equal(g, jnp.tanh(z[8:12]))
  np.testing.assert_array_equal(f, jax.nn.sigmoid(z[4:8]))


def test_bfloat16_fused_lstm_carries_the_cell_state_in_float32():
  """512 steps of a long memory: i = f = o = 1 (U = 0: no feedback, so nothing chaotic), so c_T = Σ_t g_t sums
  512 small gates. bfloat16 compute (the Flax layer's dtype) against float32. Measured with the carry in float32:
  max |Δc_T| 0.016 (max |c_T| 4.0), |Δh_T| 0.012, weight gradient 0.0041 (relative L2); with c and its gradient
  carried in bfloat16 (before): 0.29, 0.13 and 0.20. Tolerances: about 3× the measured errors."""
  from fnets.models.sequence import LSTM
  B, T, D, H = 4, 512, 8, 16
  x = jax.random.normal(jax.random.key(1), (B, T, D))
  W = 0.1 * jax.random.normal(jax.random.key(0), (D, 4 * H)) / np.sqrt(D)  # g = tanh(x·W_g): small, both signs
  b = jnp.concatenate([jnp.full(H, 20.0), jnp.full(H, 20.0), jnp.zeros(H), jnp.full(H, 20.0)])  # σ(20) = 1
  variables = {"params": {"cells": [{"W": W, "U": jnp.zeros((H, 4 * H)), "b": b}]}}

  def run(dtype):
    def loss(variables):
      y, state = LSTM(H, dtype=dtype).apply(variables, x)
      return jnp.sum(state.c) + jnp.sum(y.astype(jnp.float32)), (y, state)
    return jax.jit(jax.grad(loss, has_aux=True))(variables)

  grads32, (y32, state32) = run(jnp.float32)
  grads16, (y16, state16) = run(jnp.bfloat16)
  assert y16.dtype == jnp.bfloat16 and state16.c.dtype == state16.h.dtype == jnp.float32
  np.testing.assert_allclose(state32.c[0], jnp.sum(jnp.tanh(x @ W[:, 2 * H:3 * H]), 1), rtol=1e-5, atol=1e-4)
  assert np.max(np.abs(state16.c - state32.c)) < 0.05
  assert np.max(np.abs(state16.h - state32.h)) < 0.04
  dW16, dW32 = grads16["params"]["cells"][0]["W"], grads32["params"]["cells"][0]["W"]
  assert dW16.dtype == jnp.float32  # the parameters' gradients, through the layer's cast, are float32
  assert np.linalg.norm(dW16 - dW32) / np.linalg.norm(dW32) < 0.015
  # The state keeps its dtype when fed back (truncated BPTT, sampling); the reference path carries it alike.
  _, again = LSTM(H, dtype=jnp.bfloat16).apply(variables, x[:, :3], state16)
  _, reference = LSTM(H, dtype=jnp.bfloat16, impl="scan").apply(variables, x[:, :3], state16)
  assert again.c.dtype == again.h.dtype == reference.c.dtype == reference.h.dtype == jnp.float32
  np.testing.assert_allclose(again.c, reference.c, rtol=1e-2, atol=1e-2)
