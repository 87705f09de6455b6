"""The convolutional network as researchers learn it: conv → (batch norm) → activation → (pool), repeated;
then flatten → fully connected hidden layers → class logits (softmax is applied in the loss and predictions)."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fnets.models.layers import activation


def _per_layer(value, n: int, name: str) -> tuple:
  values = tuple(value) if isinstance(value, Sequence) else (value,) * n
  if len(values) != n:
    raise ValueError(f"{name} has {len(values)} entries for {n} conv layers: give one value or one per layer")
  return values


class CNN(nn.Module):
  """Conv layer `l` has `conv_features[l]` learnable k×k filters (k = kernel_size[l]) with stride strides[l];
  pooling (max or avg, window = stride = pool_window) follows the layers listed in `pool_after`."""
  conv_features: Sequence[int]
  kernel_size: int | Sequence[int] = 3
  strides: int | Sequence[int] = 1
  padding: str = "SAME"
  pool_after: Sequence[int] = ()
  pool: str = "max"
  pool_window: int = 2
  activation: str = "relu"
  batch_norm: bool = True
  dense_features: Sequence[int] = ()
  dropout: float = 0.0
  num_classes: int = 10
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool) -> jax.Array:
    n = len(self.conv_features)
    kernels = _per_layer(self.kernel_size, n, "kernel_size")
    strides = _per_layer(self.strides, n, "strides")
    if self.pool not in ("max", "avg"):
      raise ValueError(f"pool must be 'max' or 'avg', not {self.pool!r}")
    pool = nn.max_pool if self.pool == "max" else nn.avg_pool
    act = activation(self.activation)
    x = x_BHWC.astype(self.dtype)
    for layer, (features, k, s) in enumerate(zip(self.conv_features, kernels, strides)):
      # No conv bias under batch norm: BN's own shift replaces it.
      x = nn.Conv(features, (k, k), (s, s), self.padding, use_bias=not self.batch_norm, dtype=self.dtype)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
      x = act(x)
      if layer in self.pool_after:
        w = self.pool_window
        x = pool(x, (w, w), (w, w))
    x = x.reshape(x.shape[0], -1)  # flatten
    for features in self.dense_features:
      x = act(nn.Dense(features, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
