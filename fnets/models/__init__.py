"""Models as pure functions: Flax modules whose `init(key, x)` and `apply(variables, x)` hold no state."""

import jax.numpy as jnp

from fnets import config as config_lib
from fnets.models import cnn, mlp, sequence
from fnets.models.cnn import CNN
from fnets.models.mlp import MLP
from fnets.models.sequence import LSTM, RNN, CharLM, RowSequenceClassifier

__all__ = ["CNN", "MLP", "LSTM", "RNN", "CharLM", "RowSequenceClassifier"]

MODELS = {"cnn": CNN, "mlp": MLP, "row_sequence": RowSequenceClassifier, "char_lm": CharLM}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


_CHECKS = {"cnn": cnn.check, "mlp": mlp.check, "row_sequence": sequence.check, "char_lm": sequence.check}


def check(config) -> None:
  """`config.dtype` and the fields of `config.model` that its model reads."""
  config_lib.one_of(config, "dtype", tuple(DTYPES))
  config_lib.one_of(config, "model.name", tuple(MODELS))
  _CHECKS[config.model.name](config)


def create(model_config, **kwargs):
  """Builds the model named `model_config.name` from the rest of the config's fields."""
  fields = dict(model_config)
  return MODELS[fields.pop("name")](**fields, **kwargs)


def compute_dtype(name: str):
  """The dtype a model computes in (`config.dtype`); parameters, optimizer state and the loss stay float32."""
  return DTYPES[name]
