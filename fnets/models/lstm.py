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
each step's four gates come from one matmul [x_t, h_{t-1}]·[W; U] and one elementwise pass; the backward pass
(a custom VJP) gets the gradients of x_t and h_{t-1} from one matmul dz_t·[W; U]ᵀ per step and forms the
gradient of [W; U] as one large matmul after the reverse loop, instead of T small ones. On CPU much of the step
time is spent faulting in freshly allocated memory, so the forward keeps only what the backward needs
([x_t, h_{t-1}], the gates, c_{t-1}), the backward writes dz_t over the gates of step t, and the input
projection x·W is not materialised for all steps (benchmarks/lstm_speed.py).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnets.models import recurrent

σ = jax.nn.sigmoid


class State(NamedTuple):
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
  zeros = jnp.zeros((len(params), batch_size, U.shape[0]), U.dtype)  # in the dtype the layers compute in
  return State(zeros, zeros)


def gate_split(a):
  """The (i, f, g, o) blocks of an array whose last axis stacks the four gates."""
  return jnp.split(a, 4, axis=-1)


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


def _gate_scale(H, dtype):
  """s = 2 on the g block, 1 elsewhere: σ(s·z)·s − (s − 1) is σ(z) on i, f, o and tanh(z) = 2σ(2z) − 1 on g."""
  return jnp.repeat(jnp.array([1, 1, 2, 1], dtype), H)


def _gates(z):
  """The activations (i, f, g, o) of the stacked pre-activations z = x·W + h·U + b, in one pass over z."""
  s = _gate_scale(z.shape[-1] // 4, z.dtype)
  return σ(s * z) * s - (s - 1)


def _scan_forward(WU, b, x_TxBxD, m_TxBx1, c0, h0, unroll):
  """The equations with the four gates of one step from one matmul [x_t, h_{t-1}]·[W; U]. Returns the outputs and
  what the backward pass needs: the matmul inputs [x_t, h_{t-1}], the gates and c_{t-1} of every step."""
  def step(carry, inputs):
    c_prev, h_prev = carry
    x_t, m = inputs
    xh = jnp.concatenate([x_t, h_prev], -1)
    gates = _gates(xh @ WU + b)
    i, f, g, o = gate_split(gates)
    c = f * c_prev + i * g
    h = o * jnp.tanh(c)
    if m is not None:  # a padded step (m = 0) leaves the state as it was and outputs zeros
      c, h, y = _masked(m, c, c_prev), _masked(m, h, h_prev), m * h
    else:
      y = h
    return (c, h), (y, xh, gates, c_prev)

  (cT, hT), (y, xh, gates, c_prev) = jax.lax.scan(step, (c0, h0), (x_TxBxD, m_TxBx1), unroll=unroll)
  return (y, cT, hT), (xh, gates, c_prev)


def _masked(m, new, old):
  return m * new + (1 - m) * old


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _recurrence(W, U, b, x_TxBxD, m_TxBx1, c0, h0, unroll):
  WU = jnp.concatenate([W, U])
  return _scan_forward(WU, b, x_TxBxD, m_TxBx1, c0, h0, unroll)[0]


def _recurrence_fwd(W, U, b, x_TxBxD, m_TxBx1, c0, h0, unroll):
  WU = jnp.concatenate([W, U])
  out, saved = _scan_forward(WU, b, x_TxBxD, m_TxBx1, c0, h0, unroll)
  return out, (WU, m_TxBx1, *saved)


def _recurrence_bwd(unroll, residuals, cotangents):
  WU, m_TxBx1, xh, gates_TxBx4H, c_prev_TxBxH = residuals
  dy_TxBxH, dcT, dhT = cotangents
  T, D = gates_TxBx4H.shape[0], WU.shape[0] - WU.shape[1] // 4
  at = lambda a, t: jax.lax.dynamic_index_in_dim(a, t, keepdims=False)

  def step(k, carry):
    t = T - 1 - k  # backwards in time
    # dc_next, dh_next: the gradients reaching c_t and h_t from step t+1. gates_or_dz holds the gates of steps
    # 0..t and dz of steps t+1..T-1: dz_t overwrites the gates of step t, which are read one step ahead.
    dc_next, dh_next, gates, gates_or_dz, dx = carry
    c_prev, dy = at(c_prev_TxBxH, t), at(dy_TxBxH, t)
    m = None if m_TxBx1 is None else at(m_TxBx1, t)
    i, f, g, o = gate_split(gates)
    tanh_c = jnp.tanh(f * c_prev + i * g)
    dh = dh_next + dy if m is None else m * (dh_next + dy)
    dc = (dc_next if m is None else m * dc_next) + dh * o * (1 - tanh_c**2)
    # ∂L/∂z = ∂L/∂(i, f, g, o) ⊙ ∂(i, f, g, o)/∂z, where ∂a/∂z = (a + s − 1)(1 − a) for a = σ(s·z)·s − (s − 1).
    s = _gate_scale(g.shape[-1], g.dtype)
    dz = jnp.concatenate([dc * g, dc * c_prev, dc * i, dh * tanh_c], -1) * (gates + s - 1) * (1 - gates)
    dxh = dz @ WU.T
    dh_prev = dxh[:, D:]
    dc_prev = dc * f
    if m is not None:
      dc_prev, dh_prev = dc_prev + (1 - m) * dc_next, dh_prev + (1 - m) * dh_next
    gates_or_dz = jax.lax.dynamic_update_index_in_dim(gates_or_dz, dz, t, 0)
    dx = jax.lax.dynamic_update_index_in_dim(dx, dxh[:, :D], t, 0)
    return dc_prev, dh_prev, at(gates_or_dz, jnp.maximum(t - 1, 0)), gates_or_dz, dx

  dx = jnp.zeros(gates_TxBx4H.shape[:2] + (D,), gates_TxBx4H.dtype)
  carry = (dcT, dhT, gates_TxBx4H[-1], gates_TxBx4H, dx)
  # Not unrolled: with several steps per iteration XLA no longer updates the buffer in place but copies it.
  dc0, dh0, _, dz, dx = jax.lax.fori_loop(0, T, step, carry)
  # ∂L/∂[W; U] = Σ_t [x_t, h_{t-1}]ᵀ·dz_t, as one matmul over all T·B rows.
  dWU = xh.reshape(-1, xh.shape[-1]).T @ dz.reshape(-1, dz.shape[-1])
  dm = None if m_TxBx1 is None else jnp.zeros_like(m_TxBx1)
  return dWU[:D], dWU[D:], dz.sum((0, 1)), dx, dm, dc0, dh0


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def apply(params: list, x_BxTxD: jax.Array, state: State | None = None, *, mask_BxT: jax.Array | None = None,
          dropout: float = 0.0, key: jax.Array | None = None, unroll: int = 1):
  """Runs the stacked LSTM over x (batch-major). Returns (y_BxTxH of the last layer, final State).

  mask_BxT: 1 for real steps, 0 for padding (padded steps keep the state and output zeros).
  dropout: rate applied to the inputs of layers 2..L when `key` is given (training).
  unroll: time steps per iteration of the forward loop (trades compile time for speed)."""
  state = zero_state(params, x_BxTxD.shape[0]) if state is None else state

  def layer_fn(layer, x_TxBxD, m_TxBx1, c0_h0):
    m_TxBx1 = None if mask_BxT is None else m_TxBx1  # without a mask, no mask arithmetic in the loops
    y, c, h = _recurrence(layer["W"], layer["U"], layer["b"], x_TxBxD, m_TxBx1, *c0_h0, unroll)
    return y, (c, h)

  y, finals = recurrent.run_layers(layer_fn, params, x_BxTxD, list(zip(state.c, state.h)), mask_BxT, dropout, key)
  return y, State(jnp.stack([c for c, _ in finals]), jnp.stack([h for _, h in finals]))
