"""The multilayer perceptron: flattened input → hidden layers → class logits."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fnets.models.layers import activation


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
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
