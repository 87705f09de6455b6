"""The vanilla (Elman) RNN, h_t = tanh(W·x_t + U·h_{t-1} + b): the baseline whose gradients vanish through time,
which the LSTM's additive cell state fixes. Same API as `fnets.models.lstm`, plain JAX autodiff in both
implementations, so every transformation (jvp, jacfwd, linearize, hessian, vmap) works through either:
  "fused"  (the default) the input projection x·W + b of all steps as one matmul before the loop.
  "scan"   the reference: `jax.lax.scan` over `cell`.
Both scan their step with `recurrent.scan_layer`, which also masks the padded steps.

Params: one dict per layer, W: (input_size, H), U: (H, H), b: (H,) (PyTorch's nn.RNN layout transposed).
"""

import jax
import jax.numpy as jnp

from fnets.models import recurrent

IMPLS = ("fused", "scan")


def init(key: jax.Array, input_size: int, hidden_size: int, num_layers: int = 1) -> list:
  params = []
  for layer_key in jax.random.split(key, num_layers):
    w_key, u_key = jax.random.split(layer_key)
    params.append({"W": jax.nn.initializers.glorot_uniform()(w_key, (input_size, hidden_size)),
                   "U": jax.nn.initializers.orthogonal()(u_key, (hidden_size, hidden_size)),
                   "b": jnp.zeros(hidden_size)})
    input_size = hidden_size
  return params


def zero_state(params: list, batch_size: int) -> jax.Array:
  U = params[0]["U"]
  return jnp.zeros((len(params), batch_size, U.shape[0]), recurrent.carry_dtype(U.dtype))  # float32 under bf16


def cell(layer: dict, h_prev, x_t):
  """One step: h_t = tanh(W·x_t + U·h_{t-1} + b)."""
  return jnp.tanh(x_t @ layer["W"] + h_prev @ layer["U"] + layer["b"])


def _cell_fn(layer: dict):
  return lambda state, x_t: ((cell(layer, state[0], x_t),), {})


def trace_layer(layer: dict, x_BxTxD, h0_BxH=None, *, mask_BxT=None, h_offset_BxTxH=None) -> dict:
  """One layer run by the reference path (`apply(impl="scan")`), keeping every step: {"h": (B, T, H)}, the state
  after each step. `h_offset_BxTxH` is added to each h_t (see `recurrent.scan_layer`; recipes.gradient_flow takes
  ∂L/∂h_t from it)."""
  h0 = (zero_state([layer], x_BxTxD.shape[0])[0] if h0_BxH is None else h0_BxH).astype(layer["U"].dtype)
  return recurrent.trace_layer(_cell_fn(layer), (h0,), ("h",), x_BxTxD, mask_BxT, h_offset_BxTxH)


def apply(params: list, x_BxTxD: jax.Array, state: jax.Array | None = None, *, mask_BxT: jax.Array | None = None,
          dropout: float = 0.0, key: jax.Array | None = None, unroll: int = 1, impl: str = "fused"):
  """Returns (y_BxTxH of the last layer, final h of every layer (L, B, H)); arguments as in lstm.apply. The state
  is computed in the parameters' dtype and taken and returned in `recurrent.carry_dtype` (float32 under bf16)."""
  dtype = params[0]["U"].dtype
  state = (zero_state(params, x_BxTxD.shape[0]) if state is None else jnp.asarray(state)).astype(dtype)

  def fused_layer(layer, x_TxBxD, m_TxBx1, h0):
    xWb_TxBxH = x_TxBxD @ layer["W"] + layer["b"]  # the input projection of all steps, one matmul
    step = lambda state, xWb_t: ((jnp.tanh(xWb_t + state[0] @ layer["U"]),), {})
    y, (h,) = recurrent.scan_layer(step, (h0,), xWb_TxBxH, m_TxBx1, unroll=unroll)
    return y, h

  def scan_layer(layer, x_TxBxD, m_TxBx1, h0):
    y, (h,) = recurrent.scan_layer(_cell_fn(layer), (h0,), x_TxBxD, m_TxBx1, unroll=unroll)
    return y, h

  layer_fn = {"fused": fused_layer, "scan": scan_layer}[impl]
  y, finals = recurrent.run_layers(layer_fn, params, x_BxTxD, list(state), mask_BxT, dropout, key)
  return y, jnp.stack(finals).astype(recurrent.carry_dtype(dtype))
