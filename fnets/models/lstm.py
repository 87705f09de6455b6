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
the input projection x_t·W + b of all time steps is one matmul before the scan; inside it, the four gates come
from one fused matmul h_{t-1}·U; and the backward pass (a custom VJP) keeps each step's gate gradients and forms
the gradient of U as one large matmul after the reverse scan, instead of T small ones.
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
  zeros = jnp.zeros((len(params), batch_size, params[0]["U"].shape[0]))
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


def _fused_step(U, c_prev, h_prev, xWb_t):
  """The same equations, with x_t·W + b precomputed and the four gates from one matmul."""
  z_i, z_f, z_g, z_o = gate_split(xWb_t + h_prev @ U)
  i, f, g, o = σ(z_i), σ(z_f), jnp.tanh(z_g), σ(z_o)
  c = f * c_prev + i * g
  h = o * jnp.tanh(c)
  return c, h, (i, f, g, o)


def _masked(m, new, old):
  return m * new + (1 - m) * old


def _scan_forward(U, xWb_TxBx4H, m_TxBx1, c0, h0, unroll):
  def step(carry, inputs):
    c_prev, h_prev = carry
    xWb_t, m = inputs
    c, h, gates = _fused_step(U, c_prev, h_prev, xWb_t)
    # A padded step (m = 0) leaves the state as it was and outputs zeros.
    c, h_carry = _masked(m, c, c_prev), _masked(m, h, h_prev)
    return (c, h_carry), (m * h, gates, c, c_prev, h_prev)

  (cT, hT), (y, gates, c, c_prev, h_prev) = jax.lax.scan(step, (c0, h0), (xWb_TxBx4H, m_TxBx1), unroll=unroll)
  return (y, cT, hT), (gates, c, c_prev, h_prev)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _recurrence(U, xWb_TxBx4H, m_TxBx1, c0, h0, unroll):
  return _scan_forward(U, xWb_TxBx4H, m_TxBx1, c0, h0, unroll)[0]


def _recurrence_fwd(U, xWb_TxBx4H, m_TxBx1, c0, h0, unroll):
  out, saved = _scan_forward(U, xWb_TxBx4H, m_TxBx1, c0, h0, unroll)
  return out, (U, m_TxBx1, *saved)


def _recurrence_bwd(unroll, residuals, cotangents):
  U, m_TxBx1, (i, f, g, o), c, c_prev, h_prev = residuals
  dy_TxBxH, dcT, dhT = cotangents

  def step(carry, inputs):
    dc_next, dh_next = carry  # gradients reaching c_t and h_t from step t+1
    dy, m, i, f, g, o, c, c_prev = inputs
    dh = m * (dh_next + dy)
    tanh_c = jnp.tanh(c)
    dc = m * dc_next + dh * o * (1 - tanh_c**2)
    dz = jnp.concatenate([dc * g * i * (1 - i),       # input gate
                          dc * c_prev * f * (1 - f),  # forget gate
                          dc * i * (1 - g**2),        # input modulation
                          dh * tanh_c * o * (1 - o)], -1)  # output gate
    dc_prev = dc * f + (1 - m) * dc_next
    dh_prev = dz @ U.T + (1 - m) * dh_next
    return (dc_prev, dh_prev), dz

  (dc0, dh0), dz_TxBx4H = jax.lax.scan(step, (dcT, dhT), (dy_TxBxH, m_TxBx1, i, f, g, o, c, c_prev),
                                       reverse=True, unroll=unroll)
  # ∂L/∂U = Σ_t h_{t-1}ᵀ·dz_t, as one matmul over all T·B rows.
  H = U.shape[0]
  dU = h_prev.reshape(-1, H).T @ dz_TxBx4H.reshape(-1, 4 * H)
  return dU, dz_TxBx4H, jnp.zeros_like(m_TxBx1), dc0, dh0


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def apply(params: list, x_BxTxD: jax.Array, state: State | None = None, *, mask_BxT: jax.Array | None = None,
          dropout: float = 0.0, key: jax.Array | None = None, unroll: int = 1):
  """Runs the stacked LSTM over x (batch-major). Returns (y_BxTxH of the last layer, final State).

  mask_BxT: 1 for real steps, 0 for padding (padded steps keep the state and output zeros).
  dropout: rate applied to the inputs of layers 2..L when `key` is given (training).
  unroll: time steps per scan iteration (trades compile time for speed)."""
  state = zero_state(params, x_BxTxD.shape[0]) if state is None else state

  def layer_fn(layer, x_TxBxD, m_TxBx1, c0_h0):
    xWb_TxBx4H = x_TxBxD @ layer["W"] + layer["b"]  # the input projection of every step in one matmul
    y, c, h = _recurrence(layer["U"], xWb_TxBx4H, m_TxBx1, *c0_h0, unroll)
    return y, (c, h)

  y, finals = recurrent.run_layers(layer_fn, params, x_BxTxD, list(zip(state.c, state.h)), mask_BxT, dropout, key)
  return y, State(jnp.stack([c for c, _ in finals]), jnp.stack([h for _, h in finals]))
