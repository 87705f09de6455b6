"""Models as pure functions: Flax modules whose `init(key, x)` and `apply(variables, x)` hold no state."""

import jax.numpy as jnp

from fnets.models.cnn import CNN
from fnets.models.mlp import MLP
from fnets.models.sequence import LSTM, RNN, CharLM, RowSequenceClassifier

__all__ = ["CNN", "MLP", "LSTM", "RNN", "CharLM", "RowSequenceClassifier"]

MODELS = {"cnn": CNN, "mlp": MLP, "row_sequence": RowSequenceClassifier, "char_lm": CharLM}


def create(model_config, **kwargs):
  """Builds the model named `model_config.name` from the rest of the config's fields."""
  fields = dict(model_config)
  name = fields.pop("name")
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
  return MODELS[name](**fields, **kwargs)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """The dtype a model computes in (`config.dtype`); parameters, optimizer state and the loss stay float32."""
  if name not in DTYPES:
    raise ValueError(f"dtype {name!r} is not supported; choose one of {sorted(DTYPES)}")
  return DTYPES[name]
