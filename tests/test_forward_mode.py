"""Forward mode (jax.jvp, jax.jacfwd, jax.linearize) through the default paths of the LSTM and the RNN, against the
reference (impl="scan"), and reverse mode still on the LSTM's hand-written backward."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnets.models import lstm, rnn, sequence


def assert_trees_close(a, b, rtol=1e-10, atol=1e-12):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert u.dtype == v.dtype
    np.testing.assert_allclose(np.asarray(u, np.float64), np.asarray(v, np.float64), rtol=rtol, atol=atol)


def problem(module, B=2, T=4, D=3, H=3):
  """Float64 params (2 layers), inputs, a padded batch and an initial state, and tangents for all three."""
  keys = jax.random.split(jax.random.key(0), 5)
  params = jax.tree.map(lambda a: a.astype(jnp.float64), module.init(keys[0], D, H, num_layers=2))
  x_BxTxD = jax.random.normal(keys[1], (B, T, D), jnp.float64)
  state = jax.tree.map(lambda a: a + 0.3, module.zero_state(params, B))
  mask_BxT = (jnp.arange(T)[None] < jnp.array([T, T // 2])[:, None]).astype(jnp.float64)
  normal = lambda key, tree: jax.tree.map(lambda a: jax.random.normal(key, a.shape, a.dtype), tree)
  tangents = (normal(keys[2], params), normal(keys[3], x_BxTxD), normal(keys[4], state))
  return (params, x_BxTxD, state), tangents, mask_BxT


@pytest.mark.parametrize("module", [lstm, rnn])
def test_jvp_jacfwd_linearize_of_the_default_path_equal_the_reference(module):
  """With padding and an initial state, tangents of params, x and state; jvp also without a mask. Inside a jit,
  and applied to a jitted function from outside (jax.jvp(jax.jit(f)), the function that jax.linearize returns)."""
  with jax.enable_x64(True):
    primals, tangents, mask_BxT = problem(module)
    results = {}
    for impl in module.IMPLS:
      f = functools.partial(module.apply, mask_BxT=mask_BxT, impl=impl)
      unmasked = functools.partial(module.apply, impl=impl)
      inside = jax.jit(lambda primals, tangents: {
          "jvp": jax.jvp(f, primals, tangents),
          "jvp without mask": jax.jvp(unmasked, primals, tangents),
          "jacfwd": jax.jacfwd(lambda x: f(primals[0], x, primals[2])[0])(primals[1]),
          "linearize": jax.linearize(f, *primals)[1](*tangents)})
      results[impl] = {**inside(primals, tangents),
                       "jvp of jit": jax.jvp(jax.jit(f), primals, tangents),
                       "linearize of jit": jax.linearize(jax.jit(f), *primals)[1](*tangents)}
    for name, result in results["scan"].items():
      assert_trees_close(results["fused"][name], result)


@pytest.mark.parametrize("module", [lstm, rnn])
def test_reverse_mode_and_compositions_equal_the_reference(module):
  """grad (of params, x and state), vmap of grad (ensembles), grad of vmap, forward over reverse (HVP) and forward
  over forward."""
  with jax.enable_x64(True):
    primals, tangents, mask_BxT = problem(module)

    def loss(impl, params, x, state):
      y, final = module.apply(params, x, state, mask_BxT=mask_BxT, impl=impl)
      return jnp.sum(jnp.sin(y)) + sum(jnp.sum(s ** 2) for s in jax.tree.leaves(final))

    @functools.partial(jax.jit, static_argnums=0)
    def derivatives(impl, primals, tangents):
      L = functools.partial(loss, impl)
      two_sets = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), primals[0])
      return {
          "grad": jax.grad(L, argnums=(0, 1, 2))(*primals),
          "vmap of grad": jax.vmap(jax.grad(L), (0, None, None))(two_sets, *primals[1:]),
          "grad of vmap": jax.grad(lambda p: jax.vmap(L, (0, None, None))(p, *primals[1:]).sum())(two_sets),
          "hvp": jax.jvp(jax.grad(L, argnums=(0, 1, 2)), primals, tangents)[1],
          "jvp of jvp": jax.jvp(lambda x: jax.jvp(lambda x: L(primals[0], x, primals[2]), (x,), (tangents[1],))[1],
                                (primals[1],), (tangents[1],))[1]}

    results = {impl: derivatives(impl, primals, tangents) for impl in module.IMPLS}
    for name, result in results["scan"].items():
      assert_trees_close(results["fused"][name], result, rtol=1e-9)


def test_lstm_reverse_mode_transposes_the_linear_map_by_hand_and_forward_mode_evaluates_it():
  """The fused path's derivative is one linear primitive: jax.grad replaces it with `_backward` (its transposition
  rule), so none is left in the gradient's program; jax.jvp and jax.linearize keep it and evaluate it."""
  params, x = lstm.init(jax.random.key(0), 3, 4), jnp.ones((2, 5, 3))
  f = lambda x: jnp.sum(lstm.apply(params, x)[0])
  name = lstm._linear_p.name
  assert name not in str(jax.make_jaxpr(jax.grad(f))(x))
  assert name in str(jax.make_jaxpr(lambda x: jax.jvp(f, (x,), (x,)))(x))
  assert name in str(jax.make_jaxpr(jax.linearize(f, x)[1])(x))


@pytest.mark.parametrize("cell", sequence.CELLS)
def test_forward_mode_through_the_models_with_their_default_impl(cell):
  """CharLM (jvp in the parameters) and RowSequenceClassifier (jacfwd in the pixels), float32 and, for
  the layer, bfloat16 compute."""
  tokens = jnp.array([[1, 2, 3, 4], [4, 3, 2, 1]])
  lm = {impl: sequence.CharLM(7, embed_dim=4, hidden_size=5, cell=cell, impl=impl) for impl in ("fused", "scan")}
  variables = jax.jit(lm["fused"].init)(jax.random.key(0), tokens)  # (jitted, as every call here: one compile each)
  direction = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), variables)
  out = {impl: jax.jit(lambda v, d: jax.jvp(lambda v: m.apply(v, tokens), (v,), (d,)))(variables, direction)
         for impl, m in lm.items()}
  assert_trees_close(out["fused"], out["scan"], rtol=1e-4, atol=1e-5)

  images = jax.random.uniform(jax.random.key(1), (2, 6, 5, 1))
  classifier = {impl: sequence.RowSequenceClassifier(hidden_size=4, cell=cell, impl=impl) for impl in ("fused", "scan")}
  variables = jax.jit(functools.partial(classifier["fused"].init, train=False))(jax.random.key(0), images)
  jacobians = {impl: jax.jit(jax.jacfwd(lambda x: m.apply(variables, x, train=False)))(images)
               for impl, m in classifier.items()}
  assert jacobians["fused"].shape == (2, 10, 2, 6, 5, 1)
  assert_trees_close(jacobians["fused"], jacobians["scan"], rtol=1e-4, atol=1e-6)

  x_BxTxD, t_BxTxD = images[..., 0], jnp.sin(images[..., 0])
  layer = {impl: sequence.CELLS[cell](4, dtype=jnp.bfloat16, impl=impl) for impl in ("fused", "scan")}
  variables = jax.jit(layer["fused"].init)(jax.random.key(0), x_BxTxD)
  out = {impl: jax.jit(lambda x, t: jax.jvp(lambda x: m.apply(variables, x), (x,), (t,)))(x_BxTxD, t_BxTxD)
         for impl, m in layer.items()}
  assert jax.tree.leaves(out["fused"])[0].dtype == jnp.bfloat16  # y; the state is float32
  assert_trees_close(out["fused"], out["scan"], rtol=5e-2, atol=5e-2)
