"""What the LSTM and the vanilla RNN share: the time-major scan of a cell with its masking (`scan_layer`, and
`trace_layer` keeping every step), and running a stack of layers over a batch-major, maybe padded sequence."""

import jax
import jax.numpy as jnp

from fnets.models.layers import is_off


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


def masked(m, new, old):
  """A padded step (m = 0) keeps the old state."""
  return m * new + (1 - m) * old


def scan_layer(cell_fn, state0: tuple, x_TxBxD, m_TxBx1=None, *, unroll: int = 1, keep_steps: bool = False,
               h_offset_TxBxH=None):
  """`cell_fn(state, x_t) -> (state, gates)` scanned over time (time-major). `state` is a tuple whose last entry
  is h, what the step outputs; `gates` a dict (of the steps to keep). Padded steps (m = 0) keep the state and output
  zeros. Returns (y_TxBxH, final state) and, with `keep_steps`, every step's (gates, state), each (T, B, H).
  `h_offset_TxBxH[t]`, if given, is added to h_t (what step t outputs and passes on): at zero it changes nothing,
  and its gradient is ∂L/∂h_t."""

  def step(state_prev, inputs):
    x_t, m, offset = inputs
    state, gates = cell_fn(state_prev, x_t)
    if offset is not None:
      state = (*state[:-1], state[-1] + offset)
    y = state[-1]
    if m is not None:
      state, y = tuple(masked(m, new, old) for new, old in zip(state, state_prev)), m * y
    return state, (y, (gates, state) if keep_steps else None)

  final, (y_TxBxH, steps) = jax.lax.scan(step, state0, (x_TxBxD, m_TxBx1, h_offset_TxBxH), unroll=unroll)
  return (y_TxBxH, final, steps) if keep_steps else (y_TxBxH, final)


def time_major_mask(mask_BxT, dtype):
  """(B, T) -> (T, B, 1) for the time-major scan; None (no padding) stays None."""
  return None if mask_BxT is None else jnp.asarray(mask_BxT).T[..., None].astype(dtype)


def trace_layer(cell_fn, state0: tuple, names: tuple, x_BxTxD, mask_BxT=None, h_offset_BxTxH=None) -> dict:
  """`scan_layer` over a batch-major sequence, keeping every step: a dict of (B, T, H) arrays, the gates and the
  state after each step (its entries named by `names`)."""
  offset = None if h_offset_BxTxH is None else h_offset_BxTxH.swapaxes(0, 1)
  _, _, (gates, states) = scan_layer(cell_fn, state0, x_BxTxD.swapaxes(0, 1),
                                     time_major_mask(mask_BxT, x_BxTxD.dtype), keep_steps=True,
                                     h_offset_TxBxH=offset)
  return jax.tree.map(lambda a: a.swapaxes(0, 1), {**gates, **dict(zip(names, states))})


def run_layers(layer_fn, params: list, x_BxTxD, states: list, mask_BxT, dropout: float, key):
  """Applies `layer_fn(layer, x_TxBxD, m_TxBx1, state) -> (y_TxBxH, final_state)` layer after layer, with
  dropout on the inputs of layers 2..L when `key` is given. m_TxBx1 is None without a mask (no mask arithmetic
  in the loops). Returns (y_BxTxH, [final state of each layer])."""
  m_TxBx1 = time_major_mask(mask_BxT, x_BxTxD.dtype)
  x = x_BxTxD.swapaxes(0, 1)  # time-major for the scan
  finals = []
  for index, (layer, state) in enumerate(zip(params, states)):
    if index > 0 and key is not None and not is_off(dropout):
      keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1 - dropout, x.shape)
      x = jnp.where(keep, x / (1 - dropout), 0)
    x, final = layer_fn(layer, x, m_TxBx1, state)
    finals.append(final)
  return x.swapaxes(0, 1), finals
