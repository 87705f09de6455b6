import re

import ml_collections
import pytest

from fnets import config as config_lib
from fnets import loop
from fnets.config import ConfigError, override


def base():
  return ml_collections.ConfigDict(dict(seed=0, lr=0.1, name="a", flag=True, widths=(1, 2),
                                        model=dict(depth=2)))


def test_override_parses_each_type():
  c = override(base(), ["--config.seed=3", "--config.lr=1", "--config.name=b", "--config.flag=false",
                        "--config.widths=(4,5,6)", "--config.model.depth=7"])
  assert (c.seed, c.lr, c.name, c.flag, c.widths, c.model.depth) == (3, 1.0, "b", False, (4, 5, 6), 7)
  assert isinstance(c.lr, float)
  assert base().seed == 0  # the default is not changed


@pytest.mark.parametrize("arg, message", [
    ("--config.sed=1", "unknown config field 'sed' (did you mean 'seed'?)"),
    ("--config.seed=1.5", "expected an int like 0"),
    ("--config.flag=maybe", "expected a bool"),
    ("--config.widths=(1,'x')", "expected a tuple"),
    ("--config.seed", "write config overrides as --config.FIELD=VALUE"),
])
def test_bad_overrides(arg, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
    override(base(), [arg])


def test_every_experiment_and_variant_passes_the_checks_and_survives_config_json():
  for name in config_lib.experiment_names():
    module = config_lib.load_module(config_lib.experiment_path(name))
    for arg in getattr(module, "VARIANTS", {None: ""}):
      config = config_lib.load(config_lib.experiment_path(name if arg is None else f"{name}:{arg}"))
      loop.check(config)
      assert config_lib.from_json(config.to_dict()).to_dict() == config.to_dict()
  assert config_lib.run_name("/x/experiments/lstm_shakespeare.py:rnn") == "lstm_shakespeare-rnn"
  assert config_lib.load(config_lib.experiment_path("lstm_shakespeare:rnn")).model.cell == "rnn"


@pytest.mark.parametrize("arg, message", [
    ("--config.tta=mirror", "unknown choice; choose one of: none, flip, flip_translate"),
    ("--config.lookahead_decay=1.0", "must be in [0, 1)"),
    ("--config.lr_end_fraction=1.5", "must be in [0, 1]"),
    ("--config.bias_lr_scale=0.0", "must be > 0"),
    ("--config.model.whiten_kernel=-1", "must be an integer ≥ 0"),
    ("--config.model.global_pool=sum", "unknown choice"),
    ("--config.flip=false", "alternating_flip=True: flips the training images: it needs"),
])
def test_recipe_fields_are_checked(arg, message):
  from fnets.experiments import cnn_cifar
  with pytest.raises(ConfigError, match=re.escape(message)):
    loop.check(override(cnn_cifar.get_config(), [arg]))
