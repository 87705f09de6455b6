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
matmul h_{t-1}·U and one elementwise pass, and the backward pass (a custom VJP) gets the gradient of h_{t-1} from
one matmul per step and forms the gradients of x, W and U as one large matmul each after the reverse loop,
instead of T small ones. Inside, the loops run feature-major (h_{t-1} as an H×B matrix, the gates as 4H×B):
on CPU the per-step products Uᵀ·h (4H×H · H×B) run ~25% faster than h·U (B×H · H×4H), and the weight gradients
become x·dzᵀ over all T·B columns, the fastest form of that matmul here (benchmarks/lstm_speed.py).

Two implementations of `apply`, the same equations and arguments (`impl=`):
  "fused"  the fast path above, what the models train with. Reverse mode only (jax.grad, jax.vjp, jax.jacrev;
           jax.hessian and forward-over-reverse HVPs work too, as forward mode over its backward pass):
           JAX cannot apply forward mode (jax.jvp, jax.jacfwd, jax.linearize) to a custom VJP. Under jax.jvp or
           jax.jacfwd, jitted or not, it raises a TypeError that names impl="scan"; where the forward mode is
           applied to it from outside a jit or vmap (jax.jvp(jax.jit(f)), the function jax.linearize returns)
           JAX's own error "can't apply forward-mode autodiff (jvp) to a custom_vjp function" comes instead.
  "scan"   the reference: `jax.lax.scan` over `cell`, plain JAX autodiff, so every transformation works (jvp,
           jacfwd, linearize, hessian, grad of grad, vmap). Slower to train with. `trace_layer` runs it over one
           layer and keeps every step's gates and states.

Mixed precision (the Flax layer's dtype=bfloat16 casts the params and x): the matmuls and the gates run in
bfloat16, g from tanh; the cell state c, h = o ⊙ tanh(c) and their gradients are carried in float32, and the state
`apply` takes and returns is float32 (`recurrent.carry_dtype` says why).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

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
      c, h, y = _masked(m, c, c_prev), _masked(m, h, h_prev), m * h
    else:
      y = h
    return (c, h, _put(z_or_gates, gates, t), _put(h_prevs, h_prev_in, t), _put(c_prevs, c_prev, t),
            _put(ys, y.astype(dtype), t))

  H = U.shape[0]
  empty, c_empty = jnp.zeros((H, T, B), dtype), jnp.zeros((H, T, B), c0_HxB.dtype)
  cT, hT, gates, h_prevs, c_prevs, y = jax.lax.fori_loop(
      0, T, step, (c0_HxB, h0_HxB, z_GxTxB, empty, c_empty, empty), unroll=unroll)
  return (y, cT, hT), (gates, h_prevs, c_prevs)


def _masked(m, new, old):
  return m * new + (1 - m) * old


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _recurrence(W, U, b, x_DxTxB, m_1xTxB, c0, h0, unroll):
  return _forward(W, U, b, x_DxTxB, m_1xTxB, c0, h0, unroll)[0]


def _recurrence_fwd(W, U, b, x_DxTxB, m_1xTxB, c0, h0, unroll):
  out, saved = _forward(W, U, b, x_DxTxB, m_1xTxB, c0, h0, unroll)
  return out, (W, U, x_DxTxB, m_1xTxB, *saved)


def _recurrence_bwd(unroll, residuals, cotangents):
  W, U, x_DxTxB, m_1xTxB, gates_GxTxB, h_prev_HxTxB, c_prev_HxTxB = residuals
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
  dm = None if m_1xTxB is None else jnp.zeros_like(m_1xTxB)
  return dW, dU, dz_GxN.sum(1, dtype=wide).astype(dtype), dx, dm, dc0, dh0


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


IMPLS = ("fused", "scan")


def _scan_layer(layer: dict, x_TxBxD, m_TxBx1, c0_BxH, h0_BxH, unroll: int = 1, keep_steps: bool = False,
                h_offset_TxBxH=None):
  """The reference: `cell` scanned over time (time-major). Returns (y_TxBxH, (c_T, h_T)) and, with `keep_steps`,
  every step's {f, i, g, o, c, h} (T, B, H). `h_offset_TxBxH[t]`, if given, is added to h_t (what step t outputs
  and passes on): at zero it changes nothing, and its gradient is ∂L/∂h_t."""
  dtype = layer["U"].dtype  # of the matmuls and the gates; c and h are carried in c0's dtype (`carry_dtype`)

  def step(carry, inputs):
    c_prev, h_prev = carry
    x_t, m, offset = inputs
    c, h, gates = cell(layer, c_prev, h_prev.astype(dtype), x_t, with_gates=True)
    if offset is not None:
      h = h + offset
    y = h
    if m is not None:  # a padded step (m = 0) leaves the state as it was and outputs zeros
      c, h, y = _masked(m, c, c_prev), _masked(m, h, h_prev), m * h
    return (c, h), (y.astype(dtype), {**gates, "c": c, "h": h} if keep_steps else None)

  final, (y_TxBxH, steps) = jax.lax.scan(step, (c0_BxH, h0_BxH), (x_TxBxD, m_TxBx1, h_offset_TxBxH), unroll=unroll)
  return (y_TxBxH, final, steps) if keep_steps else (y_TxBxH, final)


def trace_layer(layer: dict, x_BxTxD, state: tuple | None = None, *, mask_BxT=None, h_offset_BxTxH=None) -> dict:
  """One layer run by the reference path (`apply(impl="scan")`), keeping every step: a dict of (B, T, H) arrays
  f, i, g, o (the gates), c and h (the states after the step). `state`: (c0, h0) of shape (B, H), zeros if None.
  `h_offset_BxTxH` is added to each h_t (see `_scan_layer`; recipes.gradient_flow takes ∂L/∂h_t from it)."""
  wide, (B, H) = recurrent.carry_dtype(layer["U"].dtype), (x_BxTxD.shape[0], layer["U"].shape[0])
  c0, h0 = (jnp.zeros((B, H), wide),) * 2 if state is None else (jnp.asarray(a).astype(wide) for a in state)
  m_TxBx1 = None if mask_BxT is None else jnp.asarray(mask_BxT).T[..., None].astype(x_BxTxD.dtype)
  offset = None if h_offset_BxTxH is None else h_offset_BxTxH.swapaxes(0, 1)
  _, _, steps = _scan_layer(layer, x_BxTxD.swapaxes(0, 1), m_TxBx1, c0, h0, keep_steps=True, h_offset_TxBxH=offset)
  return jax.tree.map(lambda a: a.swapaxes(0, 1), steps)


_FORWARD_MODE_MESSAGE = (
    'lstm.apply(impl="fused") has a hand-written reverse-mode derivative (jax.custom_vjp) and no forward mode, '
    'which jax.jvp, jax.jacfwd and jax.linearize need: use impl="scan" (`lax.scan` over the cell equations, '
    'every JAX transformation; in the Flax layers and models (CharLM, RowSequenceClassifier) the field impl).')


def _under_forward_mode() -> bool:
  """Whether the innermost transformation applied to the current computation is forward-mode autodiff (jax.jvp,
  jax.jacfwd), under which the custom VJP fails. Reverse mode (jax.grad, jax.vjp; the inner side of jax.hessian)
  traces with a different trace. JAX internals: if they move, this says False and JAX's own error comes instead."""
  try:
    from jax._src import core
    from jax._src.interpreters import ad
    return jax.config.jax_use_direct_linearize and type(core.trace_ctx.trace) is ad.JVPTrace
  except (ImportError, AttributeError):
    return False


def apply(params: list, x_BxTxD: jax.Array, state: State | None = None, *, mask_BxT: jax.Array | None = None,
          dropout: float = 0.0, key: jax.Array | None = None, unroll: int = 1, impl: str = "fused"):
  """Runs the stacked LSTM over x (batch-major). Returns (y_BxTxH of the last layer, final State).

  mask_BxT: 1 for real steps, 0 for padding (padded steps keep the state and output zeros).
  dropout: rate applied to the inputs of layers 2..L when `key` is given (training).
  unroll: time steps per iteration of the forward loop (trades compile time for speed).
  impl: "fused" (the fast path, reverse-mode derivatives only) or "scan" (the reference, every transformation);
    see the module's docstring."""
  if impl not in IMPLS:
    raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
  if state is None:
    state = zero_state(params, x_BxTxD.shape[0])
  else:  # c and h in the carry dtype (float32 under bfloat16 compute), whatever the dtype they come in
    state = State(*(jnp.asarray(s).astype(recurrent.carry_dtype(params[0]["U"].dtype)) for s in state))

  def fused_layer(layer, x_TxBxD, m_TxBx1, c0_h0):
    m_1xTxB = None if mask_BxT is None else m_TxBx1.transpose(2, 0, 1)  # no mask: no mask arithmetic in the loops
    c0_BxH, h0_BxH = c0_h0
    y_HxTxB, c_HxB, h_HxB = _recurrence(layer["W"], layer["U"], layer["b"], x_TxBxD.transpose(2, 0, 1), m_1xTxB,
                                        c0_BxH.T, h0_BxH.T, unroll)
    return y_HxTxB.transpose(1, 2, 0), (c_HxB.T, h_HxB.T)

  def scan_layer(layer, x_TxBxD, m_TxBx1, c0_h0):
    return _scan_layer(layer, x_TxBxD, None if mask_BxT is None else m_TxBx1, *c0_h0, unroll=unroll)

  if impl == "fused" and _under_forward_mode():
    raise TypeError(_FORWARD_MODE_MESSAGE)
  layer_fn = fused_layer if impl == "fused" else scan_layer
  try:
    y, finals = recurrent.run_layers(layer_fn, params, x_BxTxD, list(zip(state.c, state.h)), mask_BxT, dropout, key)
  except TypeError as error:  # JAX's error for forward mode through the custom VJP, where it reaches this call
    if impl == "fused" and "forward-mode" in str(error):
      raise TypeError(_FORWARD_MODE_MESSAGE) from error
    raise
  return y, State(jnp.stack([c for c, _ in finals]), jnp.stack([h for _, h in finals]))
