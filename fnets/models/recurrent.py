"""What the LSTM and the vanilla RNN share: running a stack of layers over a batch-major, maybe padded sequence."""

import jax
import jax.numpy as jnp


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
