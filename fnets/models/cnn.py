"""The convolutional network as researchers learn it: conv → (batch norm) → activation → (pool), repeated;
then flatten → fully connected hidden layers → class logits (softmax is applied in the loss and predictions).

Options of the fast CIFAR-10 recipes (airbench, arXiv 2404.00498), each off by default:
  whiten_kernel = k > 0   a first k×k conv (VALID) whose 2·k²·C filters whiten the image's k×k patches: set from the
                          training images by `patch_whitening` (fnets/tasks/classify.py) and never trained (the "Whiten"
                          layer; its bias trains). Followed by the activation.
  pool_before_norm        conv → pool → BN → activation: pooling right after the conv (BN and activation then work
                          on a quarter of the pixels) instead of after the activation.
  global_pool             "max"/"avg" over the remaining pixels before flattening.
  norm_scale = False      BN without its learned scale (the next conv's kernel can take it over).
  bn_momentum             of BN's running statistics.
  dirac_init              filter j < min(C_in, C_out) of each conv starts as the identity of input channel j (the
                          others keep their random init): each conv starts close to passing its input through.
  logit_scale, logit_bias the logits are `logit_scale · (W x [+ b])`; airbench uses 1/9 and no bias.
  kernel_init             of the conv and dense kernels: "lecun_normal" (Flax's default, variance 1/fan_in) or
                          "torch" (PyTorch's default, U(±1/√fan_in): variance 1/(3·fan_in)). Under BN a kernel's
                          scale sets its effective step size (lr/‖w‖²), so a recipe tuned in PyTorch (airbench)
                          needs PyTorch's init.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fnets import config as config_lib
from fnets.models.layers import ACTIVATIONS, Dropout, activation, max_pool

# Parameters set at init from the data and never trained: path → they are frozen by fnets/optim.py.
WHITEN = "Whiten"
FROZEN_PATHS = (f"{WHITEN}/kernel",)

KERNEL_INITS = {"lecun_normal": nn.linear.default_kernel_init,
                "torch": nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")}


POOLS = ("max", "avg")
GLOBAL_POOLS = ("none", "max", "avg")


def check(config) -> None:
  """The fields of `config.model` that CNN reads."""
  m = lambda *names: [f"model.{n}" for n in names]
  for name, choices in zip(m("activation", "pool", "global_pool", "padding", "kernel_init"),
                           (ACTIVATIONS, POOLS, GLOBAL_POOLS, ("SAME", "VALID"), KERNEL_INITS)):
    config_lib.one_of(config, name, tuple(choices))
  config_lib.require(config, "positive_int", *m("conv_features", "dense_features", "kernel_size", "strides",
                                                "pool_window"))
  config_lib.require(config, "int>=0", *m("whiten_kernel"))
  config_lib.require(config, "[0,1)", *m("dropout", "bn_momentum"))
  config_lib.require(config, ">0", *m("logit_scale"))
  config_lib.require(config, "bool", *m("batch_norm", "pool_before_norm", "norm_scale", "dirac_init", "logit_bias"))
  n = len(config.model.conv_features)
  for name in m("kernel_size", "strides"):
    if config_lib.has(config, name) and isinstance(value := config_lib.get(config, name), (tuple, list)) \
        and len(value) != n:
      config_lib.fail(config, name, f"give one value or one per conv layer ({n})")
  if not all(isinstance(i, int) and 0 <= i < n for i in config.model.get("pool_after", ())):
    config_lib.fail(config, "model.pool_after", f"must index the conv layers, 0..{n - 1}")


def _per_layer(value, n: int) -> tuple:
  return tuple(value) if isinstance(value, Sequence) else (value,) * n


def dirac(base_init):
  """`base_init`, except that filter j < min(C_in, C_out) is the identity of input channel j (a 1 at its centre
  tap), as torch.nn.init.dirac_ makes it: the conv starts as an implicit residual connection."""
  def init(key, shape_HWIO, dtype=jnp.float32):
    H, W, I, O = shape_HWIO
    m = min(I, O)
    eye_HWIxm = np.zeros((H, W, I, m), np.float32)
    eye_HWIxm[H // 2, W // 2, np.arange(m), np.arange(m)] = 1.0
    return base_init(key, shape_HWIO, dtype).at[..., :m].set(jnp.asarray(eye_HWIxm, dtype))
  return init


def patch_whitening(x_NHWC: np.ndarray, k: int, eps: float = 5e-4, chunk: int = 500) -> np.ndarray:
  """The Whiten layer's kernel (k, k, C, 2·k²·C) for images `x_NHWC` (normalised as the model sees them): the
  eigenvectors of the covariance of their k×k patches, largest eigenvalue first, each divided by √(λ + eps), then
  the same filters negated (so that an activation after it loses no sign). Applied to the patches, the first
  k²·C outputs have about the identity covariance."""
  x_NHWC = np.asarray(x_NHWC, np.float64)
  C = x_NHWC.shape[-1]
  cov, count = np.zeros((k * k * C,) * 2), 0
  for start in range(0, len(x_NHWC), chunk):  # (all patches at once would be N·H·W·k²·C floats)
    windows = np.lib.stride_tricks.sliding_window_view(x_NHWC[start:start + chunk], (k, k), axis=(1, 2))
    patches_PxD = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * C)  # (h, w, c): the HWIO order
    cov += patches_PxD.T @ patches_PxD
    count += len(patches_PxD)
  eigenvalues_D, eigenvectors_DxD = np.linalg.eigh(cov / count)  # ascending
  filters_DxD = eigenvectors_DxD[:, ::-1] / np.sqrt(eigenvalues_D[::-1] + eps)
  kernel_kkCxD = filters_DxD.reshape(k, k, C, k * k * C)
  return np.concatenate([kernel_kkCxD, -kernel_kkCxD], axis=-1).astype(np.float32)


class CNN(nn.Module):
  """Conv layer `l` has `conv_features[l]` learnable k×k filters (k = kernel_size[l]) with stride strides[l];
  pooling (max or avg, window = stride = pool_window) follows the layers listed in `pool_after` (after their
  activation, or right after their conv with `pool_before_norm`). The module docstring lists the other options."""
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
  whiten_kernel: int = 0
  pool_before_norm: bool = False
  global_pool: str = "none"
  norm_scale: bool = True
  bn_momentum: float = 0.9
  dirac_init: bool = False
  logit_scale: float = 1.0
  logit_bias: bool = True
  kernel_init: str = "lecun_normal"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, *, train: bool) -> jax.Array:
    n = len(self.conv_features)
    kernels, strides = _per_layer(self.kernel_size, n), _per_layer(self.strides, n)
    w = self.pool_window
    pool = functools.partial(max_pool, window=w) if self.pool == "max" else (
        lambda x: nn.avg_pool(x, (w, w), (w, w)))
    act = activation(self.activation)
    x = x_BHWC.astype(self.dtype)
    if self.whiten_kernel:
      k, C = self.whiten_kernel, x.shape[-1]
      # Zeros until fnets/tasks/classify.py sets the kernel from the training images' patches.
      x = act(nn.Conv(2 * k * k * C, (k, k), padding="VALID", kernel_init=nn.initializers.zeros, dtype=self.dtype,
                      name=WHITEN)(x))
    kernel_init = KERNEL_INITS[self.kernel_init]
    conv_init = dirac(kernel_init) if self.dirac_init else kernel_init
    for layer, (features, k, s) in enumerate(zip(self.conv_features, kernels, strides, strict=True)):
      # No conv bias under batch norm: BN's own shift replaces it.
      x = nn.Conv(features, (k, k), (s, s), self.padding, use_bias=not self.batch_norm, kernel_init=conv_init,
                  dtype=self.dtype)(x)
      pooled = layer in self.pool_after
      if pooled and self.pool_before_norm:
        x = pool(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, use_scale=self.norm_scale,
                         dtype=self.dtype)(x)
      x = act(x)
      if pooled and not self.pool_before_norm:
        x = pool(x)
    if self.global_pool != "none":
      x = (jnp.max if self.global_pool == "max" else jnp.mean)(x, axis=(1, 2))
    x = x.reshape(x.shape[0], -1)  # flatten
    for features in self.dense_features:
      x = act(nn.Dense(features, kernel_init=kernel_init, dtype=self.dtype)(x))
      x = Dropout(self.dropout)(x, train=train)
    logits_BxC = nn.Dense(self.num_classes, use_bias=self.logit_bias, kernel_init=kernel_init, dtype=self.dtype)(x)
    if self.logit_scale != 1.0:
      logits_BxC = logits_BxC * self.logit_scale
    return logits_BxC.astype(jnp.float32)
