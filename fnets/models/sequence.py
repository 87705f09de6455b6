"""Flax wrappers of the pure LSTM/RNN functions, and the sequence models built from them."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from fnets import config as config_lib
from fnets.models import lstm, rnn
from fnets.models.layers import Dropout, is_off


class Recurrent(nn.Module):
  """A stack of recurrent layers as a Flax layer: (x_BxTxD, state) -> (y_BxTxH, final state). Params in "cells".
  What LSTM and RNN share; each gives `apply_fn` (its module's `apply`) and `init_params(key, input_size)`."""
  hidden_size: int
  num_layers: int = 1
  dropout: float = 0.0  # between layers, in training
  unroll: int = 1
  dtype: jnp.dtype = jnp.float32  # computation dtype; params are kept float32 and cast for the computation
  impl: str = "fused"  # "fused" (fast) or "scan" (the reference); both take every JAX transformation

  @nn.compact
  def __call__(self, x_BxTxD, state=None, *, mask_BxT=None, train: bool = False):
    params = self.param("cells", lambda key: self.init_params(key, x_BxTxD.shape[-1]))
    key = self.make_rng("dropout") if train and not is_off(self.dropout) else None
    if self.dtype != jnp.float32:  # not the state: float32 in and out (recurrent.carry_dtype)
      params, x_BxTxD = jax.tree.map(lambda a: a.astype(self.dtype), params), x_BxTxD.astype(self.dtype)
    return self.apply_fn(params, x_BxTxD, state, mask_BxT=mask_BxT, dropout=self.dropout, key=key,
                         unroll=self.unroll, impl=self.impl)


class LSTM(Recurrent):
  """`fnets.models.lstm` as a Flax layer."""
  forget_bias: float = 1.0

  apply_fn = staticmethod(lstm.apply)

  def init_params(self, key, input_size):
    return lstm.init(key, input_size, self.hidden_size, self.num_layers, self.forget_bias)


class RNN(Recurrent):
  """`fnets.models.rnn` as a Flax layer."""
  apply_fn = staticmethod(rnn.apply)

  def init_params(self, key, input_size):
    return rnn.init(key, input_size, self.hidden_size, self.num_layers)


CELLS = {"lstm": LSTM, "rnn": RNN}


def check(config) -> None:
  """The fields of `config.model` that CharLM and RowSequenceClassifier read."""
  config_lib.one_of(config, "model.cell", tuple(CELLS))
  config_lib.one_of(config, "model.impl", lstm.IMPLS)
  config_lib.require(config, "positive_int", "model.hidden_size", "model.num_layers", "model.embed_dim",
                     "model.unroll")
  config_lib.require(config, "[0,1)", "model.dropout")


class CharLM(nn.Module):
  """Character language model: Embed → LSTM (or RNN) → Dense over the vocabulary."""
  vocab_size: int
  embed_dim: int = 128
  hidden_size: int = 512
  num_layers: int = 1
  cell: str = "lstm"
  dropout: float = 0.0
  unroll: int = 1
  dtype: jnp.dtype = jnp.float32
  impl: str = "fused"  # of the LSTM/RNN layers: "fused" (fast) or "scan" (the reference)

  @nn.compact
  def __call__(self, tokens_BxT, state=None, *, train: bool = False):
    """Returns (logits_BxTxV, final state)."""
    x_BxTxE = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)(tokens_BxT)
    y_BxTxH, state = CELLS[self.cell](self.hidden_size, self.num_layers, self.dropout, self.unroll,
                                      dtype=self.dtype, impl=self.impl)(x_BxTxE, state, train=train)
    y_BxTxH = Dropout(self.dropout)(y_BxTxH, train=train)
    return nn.Dense(self.vocab_size, dtype=self.dtype)(y_BxTxH).astype(jnp.float32), state


class RowSequenceClassifier(nn.Module):
  """Reads an image as a sequence of its rows (MNIST: 28 steps of 28 pixels) and classifies from the last h."""
  hidden_size: int = 128
  num_layers: int = 1
  cell: str = "lstm"
  dropout: float = 0.0
  unroll: int = 1
  num_classes: int = 10
  dtype: jnp.dtype = jnp.float32
  impl: str = "fused"  # of the LSTM/RNN layers: "fused" (fast) or "scan" (the reference)

  @nn.compact
  def __call__(self, x_BHWC, *, train: bool) -> jax.Array:
    B, H, W, C = x_BHWC.shape
    x_BxTxD = x_BHWC.reshape(B, H, W * C).astype(jnp.float32)
    y_BxTxH, _ = CELLS[self.cell](self.hidden_size, self.num_layers, self.dropout, self.unroll,
                                  dtype=self.dtype, impl=self.impl)(x_BxTxD, train=train)
    return nn.Dense(self.num_classes, dtype=self.dtype)(y_BxTxH[:, -1]).astype(jnp.float32)


def torch_state_dict(model_config, params) -> dict | None:
  """The weights of a `char_lm` or `row_sequence` model in the names of the same network in PyTorch, or None for
  other models: `embed` = nn.Embedding, `rnn` = nn.LSTM / nn.RNN(nonlinearity="tanh") with batch_first=True,
  `head` = nn.Linear. PyTorch orders the LSTM gates (i, f, g, o) as fnets does; fnets has one bias per gate,
  PyTorch two, so bias_hh is zero."""
  if model_config["name"] not in ("char_lm", "row_sequence"):
    return None
  rnn_name = {"lstm": "LSTM_0", "rnn": "RNN_0"}[model_config["cell"]]
  out = {}
  if "Embed_0" in params:
    out["embed.weight"] = params["Embed_0"]["embedding"]
  for k, layer in enumerate(params[rnn_name]["cells"]):
    out[f"rnn.weight_ih_l{k}"] = layer["W"].T
    out[f"rnn.weight_hh_l{k}"] = layer["U"].T
    out[f"rnn.bias_ih_l{k}"] = layer["b"]
    out[f"rnn.bias_hh_l{k}"] = jnp.zeros_like(layer["b"])
  out["head.weight"] = params["Dense_0"]["kernel"].T
  out["head.bias"] = params["Dense_0"]["bias"]
  return out
