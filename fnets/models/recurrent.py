"""What the LSTM and the vanilla RNN share: running a stack of layers over a batch-major, maybe padded sequence."""

import jax
import jax.numpy as jnp


def carry_dtype(compute_dtype):
  """The dtype of the state that `apply` takes and returns (and `zero_state` makes): float32 when the layers compute
  in bfloat16 (or float16), else the compute dtype (the parameters' dtype).

  LSTM: the cell state c is a running sum over every step, c_t = f ⊙ c_{t-1} + i ⊙ g; in bfloat16 (8 bits of
  mantissa) increments i ⊙ g vanish against a large c. So c and its gradient are carried in float32 (as Flax's
  cells keep their carry in the parameter dtype), while the matmuls and the gates (g from tanh) run in the compute
  dtype. h_t = o ⊙ tanh(c_t) is formed in float32 and rounded to the compute dtype where it enters a matmul (the
  next step's U·h, the next layer, the outputs y). The final state, c and h, is float32: fed back in (truncated
  BPTT, sampling) it keeps its dtype and its precision.
  Vanilla RNN: h_t = tanh(...) is computed and carried in the compute dtype (it is bounded, no running sum); only
  the state at the boundary is float32, for the same interface as the LSTM's."""
  return jnp.promote_types(compute_dtype, jnp.float32)


def run_layers(layer_fn, params: list, x_BxTxD, states: list, mask_BxT, dropout: float, key):
  """Applies `layer_fn(layer, x_TxBxD, m_TxBx1, state) -> (y_TxBxH, final_state)` layer after layer, with
  dropout on the inputs of layers 2..L when `key` is given. Returns (y_BxTxH, [final state of each layer])."""
  B, T, _ = x_BxTxD.shape
  if mask_BxT is None:
    m_TxBx1 = jnp.ones((T, B, 1), x_BxTxD.dtype)
  else:
    m_TxBx1 = jnp.asarray(mask_BxT).T[..., None].astype(x_BxTxD.dtype)
  x = x_BxTxD.swapaxes(0, 1)  # time-major for the scan
  finals = []
  for index, (layer, state) in enumerate(zip(params, states)):
    if index > 0 and dropout > 0 and key is not None:
      keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1 - dropout, x.shape)
      x = jnp.where(keep, x / (1 - dropout), 0)
    x, final = layer_fn(layer, x, m_TxBx1, state)
    finals.append(final)
  return x.swapaxes(0, 1), finals
