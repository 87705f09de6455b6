"""The LSTM as pure functions: the cell is the textbook equations, scanned over time with `jax.lax.scan`.

    f = σ(W_f·x_t + U_f·h_{t-1} + b_f)     forget gate
    i = σ(W_i·x_t + U_i·h_{t-1} + b_i)     input gate
    g = tanh(W_g·x_t + U_g·h_{t-1} + b_g)  input modulation gate
    o = σ(W_o·x_t + U_o·h_{t-1} + b_o)     output gate
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Params: a list with one dict per layer, gates stacked along the last axis in the order (i, f, g, o):
    W: (input_size, 4H)   U: (H, 4H)   b: (4H,)
This is PyTorch's nn.LSTM layout transposed: W = weight_ih_l{k}.T, U = weight_hh_l{k}.T, b = bias_ih + bias_hh.

`cell` is the equations gate by gate (for reading and as the reference). `apply` runs the same equations fast:
the input projection of all time steps is one matmul outside the loop, each step's four gates come from one
matmul h_{t-1}·U and one elementwise pass, and the backward pass (by hand, `_backward`) gets the gradient of
h_{t-1} from one matmul per step and forms the gradients of x, W and U as one large matmul each after the reverse
loop, instead of T small ones. Inside, the loops run feature-major (h_{t-1} as an H×B matrix, the gates as 4H×B):
on CPU the per-step products Uᵀ·h (4H×H · H×B) run ~25% faster than h·U (B×H · H×4H), and the weight gradients
become x·dzᵀ over all T·B columns, the fastest form of that matmul here (benchmarks/lstm_speed.py).

Two implementations of `apply`, the same equations and arguments (`impl=`); every JAX transformation works
through both (jax.grad, jax.vjp, jax.jvp, jax.jacfwd, jax.linearize, jax.hessian, vmap, jit, in any nesting):
  "fused"  the fast path above, what the models train with. Its derivative is a custom JVP whose tangent is one
           linear primitive (`_linear_p`): forward mode (jax.jvp, jax.jacfwd, the function jax.linearize returns,
           also where applied outside a jit: jax.jvp(jax.jit(f))) evaluates it as JAX's JVP of the fused forward
           (`_tangent`, which runs the forward again); reverse mode (jax.grad, jax.vjp, and vmap of them) transposes
           it with `_backward`, so a training step compiles to the same program as with a custom VJP. Forward over
           reverse (jax.hessian, HVPs) differentiates `_backward`. Where vmap batches the linear map itself (jacfwd,
           grad of a vmapped apply) it becomes plain JAX code, whose transpose (in grad of vmap) is JAX's own:
           the same values, not the hand-written speed.
  "scan"   the reference: `jax.lax.scan` over `cell` (`recurrent.scan_layer`), plain JAX autodiff. Slower to train
           with. `trace_layer` runs it over one layer and keeps every step's gates and states.

Mixed precision (the Flax layer's dtype=bfloat16 casts the params and x): the matmuls and the gates run in
bfloat16, g from tanh; the cell state c, h = o ⊙ tanh(c) and their gradients are carried in float32, and the state
`apply` takes and returns is float32 (`recurrent.carry_dtype` says why).
"""

import functools
from typing import NamedTuple

import jax
import jax.extend.core
import jax.numpy as jnp
from jax.interpreters import ad, batching, mlir

from fnets.models import recurrent

σ = jax.nn.sigmoid


class State(NamedTuple):
  """c and h in the carry dtype: float32 when the layers compute in bfloat16 (`recurrent.carry_dtype`)."""
  c: jax.Array  # (num_layers, B, H) cell state
  h: jax.Array  # (num_layers, B, H) hidden state


def init(key: jax.Array, input_size: int, hidden_size: int, num_layers: int = 1, forget_bias: float = 1.0) -> list:
  """W: Glorot uniform; U: orthogonal per gate; b: 0, except the forget gate's `forget_bias` (1.0 keeps c_t
  flowing at the start of training)."""
  params = []
  for layer_key in jax.random.split(key, num_layers):
    w_key, u_key = jax.random.split(layer_key)
    H = hidden_size
    W = jax.nn.initializers.glorot_uniform()(w_key, (input_size, 4 * H))
    U = jnp.concatenate([jax.nn.initializers.orthogonal()(k, (H, H)) for k in jax.random.split(u_key, 4)], -1)
    b = jnp.zeros(4 * H).at[H:2 * H].set(forget_bias)
    params.append({"W": W, "U": U, "b": b})
    input_size = hidden_size
  return params


def zero_state(params: list, batch_size: int) -> State:
  U = params[0]["U"]
  zeros = jnp.zeros((len(params), batch_size, U.shape[0]), recurrent.carry_dtype(U.dtype))
  return State(zeros, zeros)


def gate_split(a, axis: int = -1):
  """The (i, f, g, o) blocks of an array whose `axis` stacks the four gates."""
  return jnp.split(a, 4, axis=axis)


def cell(layer: dict, c_prev, h_prev, x_t, with_gates: bool = False):
  """One LSTM step, the equations gate by gate. Returns (c_t, h_t), and the gates {f, i, g, o} if asked."""
  W_i, W_f, W_g, W_o = gate_split(layer["W"])
  U_i, U_f, U_g, U_o = gate_split(layer["U"])
  b_i, b_f, b_g, b_o = gate_split(layer["b"])
  f = σ(x_t @ W_f + h_prev @ U_f + b_f)
  i = σ(x_t @ W_i + h_prev @ U_i + b_i)
  g = jnp.tanh(x_t @ W_g + h_prev @ U_g + b_g)
  o = σ(x_t @ W_o + h_prev @ U_o + b_o)
  c = f * c_prev + i * g
  h = o * jnp.tanh(c)
  return (c, h, {"f": f, "i": i, "g": g, "o": o}) if with_gates else (c, h)


def _gates(z_GxB):
  """The activations (i, f, g, o) of the stacked pre-activations z (σ, σ, tanh, σ), in the dtype of z."""
  i, f, g, o = gate_split(z_GxB, axis=0)
  return jnp.concatenate([σ(i), σ(f), jnp.tanh(g), σ(o)], 0)


def _at(a_XxTxB, t):
  return jax.lax.dynamic_index_in_dim(a_XxTxB, t, axis=1, keepdims=False)


def _put(a_XxTxB, v_XxB, t):
  return jax.lax.dynamic_update_index_in_dim(a_XxTxB, v_XxB, t, axis=1)


def _forward(W, U, b, x_DxTxB, m_1xTxB, c0_HxB, h0_HxB, unroll):
  """The equations, feature-major (G = 4H rows of gates, B columns). z = Wᵀ·x for all steps in one matmul; the
  loop adds Uᵀ·h_{t-1} + b and overwrites step t's z with its gates, in place. (A `fori_loop` over a static range
  is a `lax.scan` whose carry holds the per-step buffers.)"""
  D, T, B = x_DxTxB.shape
  G = U.shape[1]
  dtype = U.dtype  # of the matmuls and the gates; c and h are carried in c0's dtype (`carry_dtype`)
  # Wᵀ is materialised (a small D×4H copy): XLA would otherwise fold the transpose into the dot, which then runs as
  # a slower Eigen dot beside the loop instead of a YNNPACK matmul (3-6% of the training step on CPU).
  WT = jax.lax.optimization_barrier(W.T)
  z_GxTxB = (WT @ x_DxTxB.reshape(D, T * B)).reshape(G, T, B)
  UT, b_Gx1 = U.T, b[:, None]

  def step(t, carry):
    c_prev, h_prev, z_or_gates, h_prevs, c_prevs, ys = carry
    h_prev_in = h_prev.astype(dtype)  # (no-op unless the carry is wider than the compute dtype)
    gates = _gates(_at(z_or_gates, t) + UT @ h_prev_in + b_Gx1)
    i, f, g, o = gate_split(gates, axis=0)
    c = f * c_prev + i * g  # in the carry's dtype
    h = o * jnp.tanh(c)
    if m_1xTxB is not None:  # a padded step (m = 0) leaves the state as it was and outputs zeros
      m = _at(m_1xTxB, t)
      c, h, y = recurrent.masked(m, c, c_prev), recurrent.masked(m, h, h_prev), m * h
    else:
      y = h
    return (c, h, _put(z_or_gates, gates, t), _put(h_prevs, h_prev_in, t), _put(c_prevs, c_prev, t),
            _put(ys, y.astype(dtype), t))

  H = U.shape[0]
  empty, c_empty = jnp.zeros((H, T, B), dtype), jnp.zeros((H, T, B), c0_HxB.dtype)
  cT, hT, gates, h_prevs, c_prevs, y = jax.lax.fori_loop(
      0, T, step, (c0_HxB, h0_HxB, z_GxTxB, empty, c_empty, empty), unroll=unroll)
  return (y, cT, hT), (gates, h_prevs, c_prevs)


@functools.partial(jax.custom_jvp, nondiff_argnums=(7,))
def _recurrence(W, U, b, x_DxTxB, m_1xTxB, c0, h0, unroll):
  return _forward(W, U, b, x_DxTxB, m_1xTxB, c0, h0, unroll)[0]


@_recurrence.defjvp
def _recurrence_jvp(unroll, primals, tangents):
  """The primal by the fused forward; the tangent by `_linear_p`, the derivative as a linear map of the tangents
  that forward mode evaluates (`_tangent`) and reverse mode transposes (`_backward`)."""
  out, saved = _forward(*primals, unroll)
  dW, dU, db, dx, _, dc0, dh0 = tangents  # the mask is data: no derivative
  leaves, tree = jax.tree.flatten(((*primals, *saved), (dW, dU, db, dx, dc0, dh0)))
  return out, tuple(_linear_p.bind(*leaves, tree=tree, unroll=unroll))


def _tangent(residuals, tangents, unroll):
  """Forward mode: JAX's JVP of the fused forward (it runs the forward again beside the tangents)."""
  W, U, b, x_DxTxB, m_1xTxB, c0, h0 = residuals[:7]
  f = lambda W, U, b, x, c0, h0: _forward(W, U, b, x, m_1xTxB, c0, h0, unroll)[0]
  return jax.jvp(f, (W, U, b, x_DxTxB, c0, h0), tangents)[1]


def _backward(residuals, cotangents):
  """Reverse mode: the transpose of `_tangent`, by hand. Returns the cotangents of (W, U, b, x, c0, h0)."""
  W, U, _, x_DxTxB, m_1xTxB, _, _, gates_GxTxB, h_prev_HxTxB, c_prev_HxTxB = residuals
  dy_HxTxB, dcT, dhT = cotangents
  D, T, B = x_DxTxB.shape
  G = U.shape[1]
  dtype, wide = U.dtype, c_prev_HxTxB.dtype  # dc and dh are carried, and dz formed, in the carry's dtype

  def step(k, carry):
    t = T - 1 - k  # backwards in time
    # dc_next, dh_next: the gradients reaching c_t and h_t from step t+1. gates_or_dz holds the gates of steps
    # 0..t and dz of steps t+1..T-1: dz_t overwrites the gates of step t, which are read one step ahead.
    dc_next, dh_next, gates, gates_or_dz = carry
    c_prev, dy = _at(c_prev_HxTxB, t), _at(dy_HxTxB, t)
    m = None if m_1xTxB is None else _at(m_1xTxB, t)
    i, f, g, o = gate_split(gates, axis=0)
    tanh_c = jnp.tanh(f * c_prev + i * g)
    dh = dh_next + dy if m is None else m * (dh_next + dy)
    dc = (dc_next if m is None else m * dc_next) + dh * o * (1 - tanh_c**2)
    # ∂L/∂z: σ' = σ(1 − σ), tanh' = 1 − tanh².
    dz = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                          dh * tanh_c * o * (1 - o)], 0).astype(dtype)
    dh_prev = (U @ dz).astype(wide)
    dc_prev = dc * f
    if m is not None:
      dc_prev, dh_prev = dc_prev + (1 - m) * dc_next, dh_prev + (1 - m) * dh_next
    gates_or_dz = _put(gates_or_dz, dz, t)
    return dc_prev, dh_prev, _at(gates_or_dz, jnp.maximum(t - 1, 0)), gates_or_dz

  carry = (dcT, dhT, _at(gates_GxTxB, T - 1), gates_GxTxB)
  # Not unrolled: with several steps per iteration XLA no longer updates the buffer in place but copies it.
  dc0, dh0, _, dz = jax.lax.fori_loop(0, T, step, carry)
  # The weight gradients Σ_t x_t·dz_tᵀ as one matmul each over all T·B columns.
  dz_GxN, x_DxN = dz.reshape(G, T * B), x_DxTxB.reshape(D, T * B)
  # a·bᵀ; sums over all T·B columns accumulate in the carry's dtype (float32 under bfloat16)
  nt = lambda a, b: jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=wide).astype(dtype)
  dW = nt(x_DxN, dz_GxN)
  dU = nt(h_prev_HxTxB.reshape(-1, T * B), dz_GxN)
  dx = (W @ dz_GxN).reshape(D, T, B).astype(x_DxTxB.dtype)
  return dW, dU, dz_GxN.sum(1, dtype=wide).astype(dtype), dx, dc0, dh0


# The derivative of `_recurrence` as a primitive of its own, linear in its last six operands (the tangents of W, U,
# b, x, c0, h0), with the residuals before them: JAX evaluates a custom JVP's tangent in forward mode (jvp, jacfwd,
# linearize's function, under jit or outside it) and transposes it in reverse mode, so a primitive whose
# transposition rule is `_backward` gives both. (jax.custom_vjp has no forward mode; jax.custom_derivatives.
# linear_call has no batching rule, needs zero tangents of its residuals, and fails where only some inputs are
# differentiated.) Params: `tree` (the pytree of (residuals, tangents), for the mask that may be None), `unroll`.
_linear_p = jax.extend.core.Primitive("fnets_lstm_recurrence_linear")
_linear_p.multiple_results = True


def _linear_impl(*leaves, tree, unroll):
  return _tangent(*jax.tree.unflatten(tree, leaves), unroll)


def _linear_abstract_eval(*avals, tree, unroll):  # the tangents of (y, c_T, h_T): shaped like them
  (_, U, _, x_DxTxB, _, c0, h0, *_), _ = jax.tree.unflatten(tree, avals)
  _, T, B = x_DxTxB.shape
  shapes = [((U.shape[0], T, B), U.dtype), (c0.shape, c0.dtype), (h0.shape, h0.dtype)]
  return [jax.typeof(jax.ShapeDtypeStruct(shape, dtype)) for shape, dtype in shapes]


def _linear_transpose(cotangents, *leaves, tree, unroll):
  residuals, tangents = jax.tree.unflatten(tree, leaves)
  grads = _backward(residuals, [ad.instantiate_zeros(ct) for ct in cotangents])
  # Tangents given as values (zeros of inputs not differentiated) are no inputs of the linear map: no cotangent.
  return [None] * (len(leaves) - len(grads)) + [g if ad.is_undefined_primal(t) else None
                                                for g, t in zip(grads, tangents)]


def _linear_jvp(primals, tangents, *, tree, unroll):  # forward over forward: JAX's derivative of `_tangent`
  impl = functools.partial(_linear_impl, tree=tree, unroll=unroll)
  return jax.jvp(impl, tuple(primals), tuple(ad.instantiate_zeros(t) for t in tangents))


def _linear_batch(leaves, dims, *, tree, unroll):  # vmap (jacfwd): of `_tangent`, a plain JAX function
  impl = functools.partial(_linear_impl, tree=tree, unroll=unroll)
  return jax.vmap(impl, in_axes=tuple(dims))(*leaves), [0, 0, 0]


_linear_p.def_impl(jax.jit(_linear_impl, static_argnames=("tree", "unroll")))  # outside a jit: compiled once
_linear_p.def_abstract_eval(_linear_abstract_eval)
mlir.register_lowering(_linear_p, mlir.lower_fun(_linear_impl, multiple_results=True))
ad.primitive_transposes[_linear_p] = _linear_transpose
ad.primitive_jvps[_linear_p] = _linear_jvp
batching.primitive_batchers[_linear_p] = _linear_batch


IMPLS = ("fused", "scan")


def _cell_fn(layer: dict):
  dtype = layer["U"].dtype  # of the matmuls and the gates; c and h are carried in c0's dtype (`carry_dtype`)

  def cell_fn(state, x_t):
    c, h, gates = cell(layer, state[0], state[1].astype(dtype), x_t, with_gates=True)
    return (c, h), gates
  return cell_fn


def trace_layer(layer: dict, x_BxTxD, state: tuple | None = None, *, mask_BxT=None, h_offset_BxTxH=None) -> dict:
  """One layer run by the reference path (`apply(impl="scan")`), keeping every step: a dict of (B, T, H) arrays
  f, i, g, o (the gates), c and h (the states after the step). `state`: (c0, h0) of shape (B, H), zeros if None.
  `h_offset_BxTxH` is added to each h_t (see `recurrent.scan_layer`; recipes.gradient_flow takes ∂L/∂h_t from
  it)."""
  wide, (B, H) = recurrent.carry_dtype(layer["U"].dtype), (x_BxTxD.shape[0], layer["U"].shape[0])
  c0, h0 = (jnp.zeros((B, H), wide),) * 2 if state is None else (jnp.asarray(a).astype(wide) for a in state)
  return recurrent.trace_layer(_cell_fn(layer), (c0, h0), ("c", "h"), x_BxTxD, mask_BxT, h_offset_BxTxH)


def apply(params: list, x_BxTxD: jax.Array, state: State | None = None, *, mask_BxT: jax.Array | None = None,
          dropout: float = 0.0, key: jax.Array | None = None, unroll: int = 1, impl: str = "fused"):
  """Runs the stacked LSTM over x (batch-major). Returns (y_BxTxH of the last layer, final State).

  mask_BxT: 1 for real steps, 0 for padding (padded steps keep the state and output zeros).
  dropout: rate applied to the inputs of layers 2..L when `key` is given (training).
  unroll: time steps per iteration of the forward loop (trades compile time for speed).
  impl: "fused" (the fast path) or "scan" (the reference); see the module's docstring."""
  dtype = params[0]["U"].dtype
  if state is None:
    state = zero_state(params, x_BxTxD.shape[0])
  else:  # c and h in the carry dtype (float32 under bfloat16 compute), whatever the dtype they come in
    state = State(*(jnp.asarray(s).astype(recurrent.carry_dtype(dtype)) for s in state))

  def fused_layer(layer, x_TxBxD, m_TxBx1, c0_h0):
    m_1xTxB = None if m_TxBx1 is None else m_TxBx1.transpose(2, 0, 1)
    c0_BxH, h0_BxH = c0_h0
    y_HxTxB, c_HxB, h_HxB = _recurrence(layer["W"], layer["U"], layer["b"], x_TxBxD.transpose(2, 0, 1), m_1xTxB,
                                        c0_BxH.T, h0_BxH.T, unroll)
    return y_HxTxB.transpose(1, 2, 0), (c_HxB.T, h_HxB.T)

  def scan_layer(layer, x_TxBxD, m_TxBx1, c0_h0):
    y_TxBxH, final = recurrent.scan_layer(_cell_fn(layer), c0_h0, x_TxBxD, m_TxBx1, unroll=unroll)
    return y_TxBxH.astype(dtype), final

  layer_fn = {"fused": fused_layer, "scan": scan_layer}[impl]
  y, finals = recurrent.run_layers(layer_fn, params, x_BxTxD, list(zip(state.c, state.h)), mask_BxT, dropout, key)
  return y, State(jnp.stack([c for c, _ in finals]), jnp.stack([h for _, h in finals]))
