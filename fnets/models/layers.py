"""Small shared pieces of the layer stack."""

import flax.linen as nn

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "leaky_relu": nn.leaky_relu, "gelu": nn.gelu, "elu": nn.elu,
               "silu": nn.silu, "sigmoid": nn.sigmoid}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]
