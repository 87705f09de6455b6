"""Model output shapes and parameter counts for known configs, and config errors."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest

from fnets.experiments import cnn_cifar, cnn_mnist, mlp_mnist
from fnets import models
from fnets.models import cnn, layers


def param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # (arrays, or shapes from jax.eval_shape)


def init(model, shape):
  return model.init(jax.random.key(0), jnp.zeros(shape), train=False)


def conv_bn(c_in, c_out, k=3):
  return k * k * c_in * c_out + 2 * c_out  # kernel (no bias under BN) + BN scale and shift


def test_cnn_cifar_shapes_and_params():
  model = models.create(cnn_cifar.get_config().model, num_classes=10)
  variables = jax.eval_shape(lambda: init(model, (2, 32, 32, 3)))  # (shapes only: nothing is computed)
  widths = (24, 64, 64, 256, 256, 256, 256)  # after the 2x2 whitening conv's 24 filters (with bias)
  convs = sum(3 * 3 * a * b + b for a, b in zip(widths, widths[1:]))  # BN without scale: its shift only
  expected = (2 * 2 * 3 * 24 + 24) + convs + 256 * 10  # global pool, logits without bias
  assert param_count(variables["params"]) == expected == 1_971_640
  logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, jnp.zeros((5, 32, 32, 3)))
  assert logits.shape == (5, 10) and logits.dtype == jnp.float32


def test_cnn_airbench_options():
  # Whitening 2x2 (24 filters) → blocks conv→pool→BN→act, conv→BN→act → global max pool → scaled, bias-free logits.
  kw = dict(conv_features=(8, 8, 16), pool_after=(0, 2), pool_before_norm=True, whiten_kernel=2, global_pool="max",
            norm_scale=False, dirac_init=True, logit_bias=False, activation="gelu", num_classes=3)
  model = models.CNN(**kw)
  variables = jax.jit(lambda key: model.init(key, jnp.zeros((2, 16, 16, 3)), train=False))(jax.random.key(0))
  params = variables["params"]
  apply = lambda model, variables, x: jax.jit(functools.partial(model.apply, train=False))(variables, x)
  assert params["Whiten"]["kernel"].shape == (2, 2, 3, 24) and not np.any(params["Whiten"]["kernel"])
  assert set(params["BatchNorm_0"]) == {"bias"} and set(params["Dense_0"]) == {"kernel"}
  assert params["Dense_0"]["kernel"].shape == (16, 3)  # global pool: one value per channel
  # Dirac: the first min(C_in, C_out) filters are the identity, the others random.
  k = np.asarray(params["Conv_1"]["kernel"])
  np.testing.assert_array_equal(k[1, 1], np.eye(8)) and np.testing.assert_array_equal(k[0], 0)
  assert np.any(np.asarray(params["Conv_2"]["kernel"])[..., 8:])
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  whiten = {**params["Whiten"], "kernel": cnn.patch_whitening(np.asarray(x), 2)}  # (set by train.setup)
  variables = {**variables, "params": {**params, "Whiten": whiten}}
  logits = apply(model, variables, x)
  assert np.all(np.isfinite(logits)) and np.std(logits) > 0
  np.testing.assert_allclose(apply(models.CNN(**kw, logit_scale=1 / 9), variables, x), logits / 9, rtol=1e-6)
  # 16 -2 VALID-> 15 -conv, pool-> 7 -> 7 -conv, pool-> 3 -global max-> 1: pooling before BN changes the result.
  assert not np.allclose(apply(models.CNN(**{**kw, "pool_before_norm": False}), variables, x), logits)


def test_cnn_kernel_init_torch_is_pytorchs_default():
  kw = dict(conv_features=(64,), dense_features=(32,), num_classes=10, dirac_init=True)
  init = lambda **k: models.CNN(**kw, **k).init(jax.random.key(0), jnp.zeros((1, 8, 8, 16)), train=False)["params"]
  torch_init, flax_init = init(kernel_init="torch"), init()
  for name, fan_in in (("Conv_0", 3 * 3 * 16), ("Dense_0", 8 * 8 * 64), ("Dense_1", 32)):
    random = lambda p: np.asarray(p[name]["kernel"])[..., 16 if name == "Conv_0" else 0:]  # (Conv_0's first 16: Dirac)
    assert np.abs(random(torch_init)).max() <= 1 / np.sqrt(fan_in)  # U(±1/√fan_in)
    np.testing.assert_allclose(random(torch_init).var(), 1 / (3 * fan_in), rtol=0.15)
    np.testing.assert_allclose(random(flax_init).var(), 1 / fan_in, rtol=0.15)
  np.testing.assert_array_equal(np.asarray(torch_init["Conv_0"]["kernel"])[1, 1, :, :16], np.eye(16))


def test_patch_whitening_decorrelates_patches():
  rng = np.random.default_rng(0)
  # Correlated channels and neighbouring pixels: a smoothed random image with mixed channels.
  x = rng.normal(size=(64, 12, 12, 3))
  x = (x + np.roll(x, 1, axis=1) + np.roll(x, 1, axis=2)) @ np.array([[1, .5, 0], [0, 1, .5], [.2, 0, 1]])
  kernel = cnn.patch_whitening(x, 2, eps=1e-8)
  assert kernel.shape == (2, 2, 3, 24)
  np.testing.assert_allclose(kernel[..., 12:], -kernel[..., :12])
  out = jax.lax.conv_general_dilated(jnp.asarray(x, jnp.float32), kernel, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  z = np.asarray(out[..., :12]).reshape(-1, 12).astype(np.float64)
  np.testing.assert_allclose(z.T @ z / len(z), np.eye(12), atol=1e-3)  # the patches' covariance is the identity
  # Largest eigenvalue first: the first filter has the smallest norm (divided by the largest √λ).
  norms = np.linalg.norm(kernel[..., :12].reshape(12, 12), axis=0)
  assert np.all(np.diff(norms) >= -1e-6)


def test_cnn_mnist_and_mlp_mnist_params():
  cnn = models.create(cnn_mnist.get_config().model, num_classes=10)
  widths = (1, 16, 32, 32, 64)
  expected = sum(conv_bn(a, b) for a, b in zip(widths, widths[1:])) + (7 * 7 * 64 * 256 + 256) + (256 * 10 + 10)
  assert param_count(init(cnn, (1, 28, 28, 1))["params"]) == expected
  mlp = models.create(mlp_mnist.get_config().model, num_classes=10)
  expected = (784 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 10 + 10)
  assert param_count(init(mlp, (1, 28, 28, 1))["params"]) == expected


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "gelu"])
def test_cnn_layer_stack_variants(pool, activation):
  model = models.CNN(conv_features=(4, 8), kernel_size=(5, 3), strides=(2, 1), padding="VALID", pool_after=(1,),
                     pool=pool, activation=activation, batch_norm=False, dense_features=(16,), dropout=0.5,
                     num_classes=3)
  variables = init(model, (2, 28, 28, 1))
  # 28 -5 VALID stride 2-> 12 -3 VALID-> 10 -pool-> 5: flatten 5*5*8 = 200.
  assert variables["params"]["Dense_0"]["kernel"].shape == (200, 16)
  assert variables["params"]["Conv_0"]["kernel"].shape == (5, 5, 1, 4)
  x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
  y = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert y.shape == (2, 3)
  # Dropout is active in training, off in evaluation.
  assert not np.allclose(y, model.apply(variables, x, train=False))


def test_pool_kinds_differ():
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 1))
  outs = []
  for pool in ("max", "avg"):
    model = models.CNN(conv_features=(2,), pool_after=(0,), pool=pool, batch_norm=False, num_classes=2)
    outs.append(model.apply(init(model, x.shape), x, train=False))
  assert not np.allclose(*outs)


@pytest.mark.parametrize("arg, message", [
    ("--config.model.activation=swish", "model.activation='swish': unknown choice; choose one of: relu, tanh"),
    ("--config.model.pool=median", "model.pool='median': unknown choice; choose one of: max, avg"),
    ("--config.model.kernel_init=he", "model.kernel_init='he': unknown choice; choose one of: lecun_normal, torch"),
    ("--config.model.pool_after=(6,)", "must index the conv layers, 0..5"),
    ("--config.model.dropout=1.0", "model.dropout=1.0: must be in [0, 1)"),
    ("--config.dtype=float16", "unknown choice; choose one of: float32, bfloat16"),
    ("--config.model.name=resnet", "unknown choice; choose one of: cnn, mlp, row_sequence, char_lm"),
])
def test_model_fields_are_checked(arg, message):
  from fnets import config as config_lib
  from fnets.errors import ConfigError
  with pytest.raises(ConfigError, match=re.escape(message)):
    models.check(config_lib.override(cnn_cifar.get_config(), [arg]))


def test_per_layer_fields_need_one_value_per_conv_layer():
  from fnets.errors import ConfigError
  config = cnn_cifar.get_config()
  config.model = {**config.model, "kernel_size": (3, 3, 3)}  # (from Python: the command line keeps an int an int)
  with pytest.raises(ConfigError, match=re.escape("kernel_size=(3, 3, 3): give one value or one per conv layer (6)")):
    models.check(config)


def test_models_are_pure_functions_under_vmap_and_grad():
  model = models.MLP(hidden_features=(8,), num_classes=3)
  keys = jax.random.split(jax.random.key(0), 4)
  stacked = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 5)), train=False))(keys)  # 4 independent models
  x = jnp.ones((2, 5))
  out = jax.vmap(lambda v: model.apply(v, x, train=False))(stacked)
  assert out.shape == (4, 2, 3)
  grads = jax.grad(lambda v: model.apply(v, x, train=False).sum())(jax.tree.map(lambda a: a[0], stacked))
  assert jax.tree.structure(grads) == jax.tree.structure(jax.tree.map(lambda a: a[0], stacked))


def test_max_pool_has_flaxs_values_and_gradients_under_every_transformation():
  shape, window = (2, 9, 11, 3), 3  # (odd sizes: the last rows and columns are dropped)
  x = jax.random.normal(jax.random.key(0), shape)
  x = x.at[0, :2 * window, :2 * window].set(1.0)  # 4 windows of ties: select-and-scatter gives one pixel each
  reference = lambda x: nn.max_pool(x, (window, window), (window, window))
  pool = lambda x: layers.max_pool(x, window)
  loss = lambda p: lambda x: jnp.sum(jnp.sin(p(x)) * (1 + jnp.arange(p(x).size).reshape(p(x).shape)))
  np.testing.assert_array_equal(pool(x), reference(x))
  np.testing.assert_array_equal(jax.jit(jax.grad(loss(pool)))(x), jax.grad(loss(reference))(x))
  assert np.sum(jax.grad(loss(pool))(x)[0, :2 * window, :2 * window] != 0) == 4 * x.shape[-1]
  t = jax.random.normal(jax.random.key(1), shape)
  np.testing.assert_array_equal(jax.jvp(pool, (x,), (t,))[1], jax.jvp(reference, (x,), (t,))[1])
  np.testing.assert_array_equal(jax.vmap(pool)(x[:, None]), reference(x)[:, None])
  hvp = lambda p: jax.jvp(jax.grad(loss(p)), (x,), (t,))[1]
  np.testing.assert_allclose(hvp(pool), hvp(reference), rtol=1e-6, atol=1e-6)
