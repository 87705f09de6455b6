"""Configs: plain `ml_collections.ConfigDict`s from `get_config(arg)` in a Python file, as Flax's examples load them
(`--config=PATH.py[:ARG]`), with every field checked before a run touches its workdir.

What ml_collections' `config_flags` does not say clearly is said here, in one line each: overrides are checked
against the type of the default (`--config.batch_size=1.5`: "expected an int like 128"), an unknown field gets a
did-you-mean, and `check` rejects values out of range and unknown choices, naming the valid ones.
"""

import ast
import difflib
import importlib.util
import os
from collections.abc import Sequence

import ml_collections

EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


class UsageError(Exception):
  """A user's mistake (config, flags, data, workdir): launch.py prints the message as one line and exits 2.
  The message names the problem and the fix. Anything else is a bug and keeps its traceback."""


class ConfigError(UsageError):
  """A config field or value that does not exist or does not fit."""


# --- Loading: PATH.py[:ARG] and the --experiment=NAME[:ARG] short form.

def experiment_names() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(EXPERIMENTS_DIR) if f.endswith(".py") and not f.startswith("_")
                and f != "common.py")


def experiment_path(spec: str) -> str:
  """`NAME[:ARG]` of a file in experiments/ → `PATH.py[:ARG]`."""
  name, sep, arg = spec.partition(":")
  names = experiment_names()
  if name not in names:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown experiment {name!r}{hint}; choose one of: {', '.join(names)} (see --list)")
  return os.path.join(EXPERIMENTS_DIR, f"{name}.py") + sep + arg


def load_module(path: str):
  if not os.path.exists(path):
    raise ConfigError(f"--config={path}: no such file; give the path of a config file (PATH.py[:ARG])")
  if not os.path.isfile(path) or not path.endswith(".py"):
    raise ConfigError(f"--config={path}: not a Python file; give the path of a config file (PATH.py[:ARG])")
  spec = importlib.util.spec_from_file_location(f"fnets_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # an error inside the user's config file is a bug there: it keeps its traceback
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config={path}: the file has no get_config(); a config file defines get_config() -> "
                      f"ConfigDict")
  return module


def load(spec: str) -> ml_collections.ConfigDict:
  """The config of `PATH.py[:ARG]`: `get_config(ARG)`, or `get_config()` without ARG. A file may list its
  variants (the values of ARG) in a dict `VARIANTS = {arg: description}`."""
  path, _, arg = spec.partition(":")
  module = load_module(path)
  variants = getattr(module, "VARIANTS", None)
  if arg and variants is not None and arg not in variants:
    raise ConfigError(f"--config={spec}: unknown variant {arg!r}; choose one of: {', '.join(variants)}")
  if arg and variants is None:
    raise ConfigError(f"--config={spec}: {path} has no variants; drop ':{arg}'")
  return module.get_config(arg) if arg else module.get_config()


def run_name(spec: str) -> str:
  """`experiments/lstm_shakespeare.py:rnn` → `lstm_shakespeare-rnn`: the default workdir's name."""
  path, _, arg = spec.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  return f"{stem}-{arg}" if arg else stem


# --- Overrides: --config.FIELD=VALUE, type-checked against the default.

def _parse(text: str, default, field: str):
  """Parses `text` into the type of `default`."""
  want = type(default).__name__
  article = "an" if want[0] in "aeiou" else "a"
  try:
    if isinstance(default, bool):
      if text.lower() in ("true", "1", "yes"):
        return True
      if text.lower() in ("false", "0", "no"):
        return False
      raise ValueError
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
    if isinstance(default, str):
      return text
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ConfigError(f"--config.{field}={text}: expected {article} {want} like {default!r}") from None
  if isinstance(default, (tuple, list)):
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    kinds = {type(v) for v in default} or {int}
    if not all(type(v) in kinds or (float in kinds and type(v) is int) for v in value):
      raise ConfigError(f"--config.{field}={text}: expected a tuple of {'/'.join(k.__name__ for k in kinds)} "
                        f"like {default!r}")
  elif default is not None and type(value) is not type(default):
    raise ConfigError(f"--config.{field}={text}: expected {article} {want} like {default!r}")
  return value


def fields(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """All leaf field names, dotted."""
  out = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out += fields(value, f"{prefix}{key}.")
    else:
      out.append(f"{prefix}{key}")
  return out


def get(config, name: str):
  for part in name.split("."):
    config = config[part]
  return config


def check_overrides(config: ml_collections.ConfigDict, args: Sequence[str]) -> None:
  """Raises ConfigError for an override that names no field of `config` or whose value does not fit its type."""
  valid = fields(config)
  for arg in args:
    name, sep, text = arg.removeprefix("--config.").partition("=")
    if not arg.startswith("--config.") or not sep:
      raise ConfigError(f"cannot read {arg!r}: write config overrides as --config.FIELD=VALUE")
    if name not in valid:
      close = difflib.get_close_matches(name, valid, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise ConfigError(f"unknown config field {name!r}{hint}. Valid fields: {', '.join(valid)}")
    _parse(text, get(config, name), name)


def override(config: ml_collections.ConfigDict, args: Sequence[str]) -> ml_collections.ConfigDict:
  """A copy of `config` with `--config.a.b=value` arguments applied (for notebooks and tests; launch.py applies
  them through config_flags after `check_overrides`)."""
  check_overrides(config, args)
  config = ml_collections.ConfigDict(config.to_dict())
  for arg in args:
    name, _, text = arg.removeprefix("--config.").partition("=")
    *parents, leaf = name.split(".")
    node = get(config, ".".join(parents)) if parents else config
    node[leaf] = _parse(text, node[leaf], name)
  return config


def from_json(recorded: dict) -> ml_collections.ConfigDict:
  """A config saved as config.json (lists back to tuples)."""
  fix = lambda v: {k: fix(x) for k, x in v.items()} if isinstance(v, dict) else (
      tuple(v) if isinstance(v, list) else v)
  return ml_collections.ConfigDict(fix(recorded))


# --- Checks: every field's range and choices, before anything is written or read.

# Fields a run may change between starts: they do not change its result (a smoke run with max_steps can be
# continued into the full run; a resumed run may log or save more often).
FREE_FIELDS = ("data_dir", "max_steps", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
               "eval_batch_size", "sample_prompt", "sample_length", "sample_temperature", "profile_steps")

_POSITIVE_INT = ("batch_size", "eval_batch_size", "num_epochs", "num_steps", "seq_len", "log_every_steps",
                 "eval_every_steps", "eval_streams", "keep_checkpoints", "ensemble_size", "sample_length",
                 "model.hidden_size", "model.num_layers", "model.embed_dim", "model.kernel_size", "model.strides",
                 "model.pool_window", "model.unroll")
_NON_NEGATIVE_INT = ("lookahead_every", "model.whiten_kernel")
_NON_NEGATIVE = ("max_steps", "checkpoint_every_steps", "crop_padding", "weight_decay", "grad_clip_norm",
                 "warmup_epochs", "whiten_bias_epochs", "lookahead_start_epochs", "lookahead_decay_power")
_POSITIVE = ("learning_rate", "sample_temperature", "bias_lr_scale", "model.logit_scale")
_FRACTION = ("momentum", "label_smoothing", "model.dropout", "model.bn_momentum", "lookahead_decay")  # in [0, 1)
_UNIT = ("lr_start_fraction", "lr_end_fraction")  # in [0, 1]
_BOOL = ("augment", "flip", "alternating_flip", "nesterov", "decay_biases", "model.batch_norm",
         "model.pool_before_norm", "model.norm_scale", "model.dirac_init", "model.logit_bias")
_POSITIVE_TUPLES = ("model.conv_features", "model.dense_features", "model.hidden_features")


def _choices() -> dict[str, tuple]:
  from fnets import loop, models, optim, parallel
  from fnets.data import images
  from fnets.models import cnn, layers, lstm, sequence
  return {"task": tuple(loop.TASKS), "optimizer": optim.OPTIMIZERS, "schedule": optim.SCHEDULES, "tta": images.TTA,
          "model.global_pool": ("none", "max", "avg"),
          "dtype": tuple(models.DTYPES), "param_sharding": parallel.PARAM_SHARDINGS,
          "model.name": tuple(models.MODELS), "model.activation": tuple(layers.ACTIVATIONS),
          "model.pool": ("max", "avg"), "model.cell": tuple(sequence.CELLS), "model.padding": ("SAME", "VALID"),
          "model.impl": lstm.IMPLS, "model.kernel_init": tuple(cnn.KERNEL_INITS)}


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field whose value is out of range or not one of its choices."""
  present = set(fields(config))

  def bad(name, why):
    raise ConfigError(f"--config.{name}={get(config, name)!r}: {why}")

  for name, choices in _choices().items():
    if name in present and get(config, name) not in choices:
      bad(name, f"unknown choice; choose one of: {', '.join(map(str, choices))}")
  for name in present:
    value = get(config, name)
    values = value if isinstance(value, (tuple, list)) else (value,)
    if name in _POSITIVE_INT and not all(isinstance(v, int) and v > 0 for v in values):
      bad(name, "must be a positive integer")
    if name in _NON_NEGATIVE_INT and not all(isinstance(v, int) and v >= 0 for v in values):
      bad(name, "must be an integer ≥ 0")
    if name in _NON_NEGATIVE and not all(v >= 0 for v in values):
      bad(name, "must be ≥ 0")
    if name in _UNIT and not all(0 <= v <= 1 for v in values):
      bad(name, "must be in [0, 1]: a fraction of the peak learning rate")
    if name in _BOOL and not isinstance(value, bool):
      bad(name, "must be true or false")
    if name in _POSITIVE and not all(v > 0 for v in values):
      bad(name, "must be > 0")
    if name in _FRACTION and not all(0 <= v < 1 for v in values):
      bad(name, "must be in [0, 1)")
    if name in _POSITIVE_TUPLES and not all(isinstance(v, int) and v > 0 for v in values):
      bad(name, "must be positive integers")
  if config.get("alternating_flip") and not (config.augment and config.flip):
    bad("alternating_flip", "flips the training images: it needs --config.augment=true and --config.flip=true")
  if "validation_percent" in present and not 0 <= config.validation_percent < 100:
    bad("validation_percent", "must be in [0, 100): the percent of the train split held out for validation")
  if config.get("profile_steps"):
    start, sep, stop = config.profile_steps.partition(":")
    if not (sep and start.isdigit() and stop.isdigit() and int(start) < int(stop)):
      bad("profile_steps", 'write "A:B" with 0 ≤ A < B: the steps A..B-1 are traced')
  if config.get("init_from") and not os.path.isdir(os.path.expanduser(config.init_from)):
    bad("init_from", "no such directory; give a run's workdir or WORKDIR/checkpoints/STEP")
  if "model.pool_after" in present:
    n = len(config.model.conv_features)
    if not all(isinstance(i, int) and 0 <= i < n for i in config.model.pool_after):
      bad("model.pool_after", f"must index the conv layers, 0..{n - 1}")
  for name in ("model.kernel_size", "model.strides"):
    value = get(config, name) if name in present else None
    if isinstance(value, (tuple, list)) and len(value) != len(config.model.conv_features):
      bad(name, f"give one value or one per conv layer ({len(config.model.conv_features)})")
