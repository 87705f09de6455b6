"""Small shared pieces of the layer stack."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "leaky_relu": nn.leaky_relu, "gelu": nn.gelu, "elu": nn.elu,
               "silu": nn.silu, "sigmoid": nn.sigmoid}


def activation(name: str):
  return ACTIVATIONS[name]


def is_off(rate) -> bool:
  """A rate known to be 0 when the step is traced; a sweep's rate is an array, never off."""
  return isinstance(rate, (int, float)) and rate == 0


class Dropout(nn.Module):
  """`nn.Dropout` (the same numbers: its own "Dropout_N" scope draws from the "dropout" stream) whose rate may be
  an array: a sweep's, which Flax's cannot take (it asks `rate == 0` in Python). A rate of 0 keeps every unit."""
  rate: float

  @nn.compact
  def __call__(self, x, *, train: bool):
    if not train or is_off(self.rate):
      return x
    keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate, x.shape)
    return jax.lax.select(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def max_pool(x_BHWC: jax.Array, window: int) -> jax.Array:
  """`nn.max_pool(x, (window, window), (window, window))` (VALID), differentiated elementwise.

  Why: XLA lowers max pooling's gradient (select-and-scatter) to a scatter, which XLA:CPU runs element by
  element: at cnn_cifar's sizes forward + backward take 2.15-2.30× as long as with this rule, and the whole train
  step 1.24× (benchmarks/README.md). The tangent of each output is that of the first pixel of its window (row-major) equal
  to the maximum, the pixel select-and-scatter picks, so gradients are the same numbers. As a JVP rule it also
  serves forward mode; reverse mode is its transpose (strided slices → padding)."""
  return nn.max_pool(x_BHWC, (window, window), (window, window))


@max_pool.defjvp
def _max_pool_jvp(window, primals, tangents):
  (x_BHWC,), (t_BHWC,) = primals, tangents
  y_BhwC = max_pool(x_BHWC, window)
  _, h, w, _ = y_BhwC.shape
  taken_BhwC = jnp.zeros(y_BhwC.shape, bool)  # an earlier pixel of the window holds the maximum
  t_BhwC = jnp.zeros(y_BhwC.shape, t_BHWC.dtype)
  for i in range(window):
    for j in range(window):
      pixel = lambda a: a[:, i:i + h * window:window, j:j + w * window:window]  # (i, j) of every window
      wins = (pixel(x_BHWC) == y_BhwC) & ~taken_BhwC
      taken_BhwC = taken_BhwC | wins
      t_BhwC = t_BhwC + jnp.where(wins, pixel(t_BHWC), 0)
  return y_BhwC, t_BhwC
