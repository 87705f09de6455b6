"""The vanilla (Elman) RNN, h_t = tanh(W·x_t + U·h_{t-1} + b): the baseline whose gradients vanish through time,
which the LSTM's additive cell state fixes. Same API as `fnets.models.lstm`; plain autodiff through the scan.

Params: one dict per layer, W: (input_size, H), U: (H, H), b: (H,) (PyTorch's nn.RNN layout transposed).
"""

import jax
import jax.numpy as jnp

from fnets.models import recurrent


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
  return jnp.zeros((len(params), batch_size, U.shape[0]), U.dtype)  # in the dtype the layers compute in


def cell(layer: dict, h_prev, x_t):
  """One step: h_t = tanh(W·x_t + U·h_{t-1} + b)."""
  return jnp.tanh(x_t @ layer["W"] + h_prev @ layer["U"] + layer["b"])


def apply(params: list, x_BxTxD: jax.Array, state: jax.Array | None = None, *, mask_BxT: jax.Array | None = None,
          dropout: float = 0.0, key: jax.Array | None = None, unroll: int = 1):
  """Returns (y_BxTxH of the last layer, final h of every layer (L, B, H)); arguments as in lstm.apply."""
  state = zero_state(params, x_BxTxD.shape[0]) if state is None else state

  def layer_fn(layer, x_TxBxD, m_TxBx1, h0):
    xWb_TxBxH = x_TxBxD @ layer["W"] + layer["b"]

    def step(h_prev, inputs):
      xWb_t, m = inputs
      h = jnp.tanh(xWb_t + h_prev @ layer["U"])
      return m * h + (1 - m) * h_prev, m * h  # padded steps keep h and output zeros

    h, y = jax.lax.scan(step, h0, (xWb_TxBxH, m_TxBx1), unroll=unroll)
    return y, h

  y, finals = recurrent.run_layers(layer_fn, params, x_BxTxD, list(state), mask_BxT, dropout, key)
  return y, jnp.stack(finals)
