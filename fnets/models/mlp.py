"""The multilayer perceptron: flattened input → hidden layers → class logits."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fnets import config as config_lib
from fnets.models.layers import ACTIVATIONS, Dropout, activation


def check(config) -> None:
  """The fields of `config.model` that MLP reads."""
  config_lib.one_of(config, "model.activation", tuple(ACTIVATIONS))
  config_lib.require(config, "positive_int", "model.hidden_features")
  config_lib.require(config, "[0,1)", "model.dropout")


class MLP(nn.Module):
  hidden_features: Sequence[int] = (512, 512)
  activation: str = "relu"
  dropout: float = 0.0
  num_classes: int = 10
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    act = activation(self.activation)
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for features in self.hidden_features:
      x = act(nn.Dense(features, dtype=self.dtype)(x))
      x = Dropout(self.dropout)(x, train=train)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
