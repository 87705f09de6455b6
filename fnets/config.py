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

from fnets.errors import ConfigError

# experiments/ at the checkout's top, installed as the package fnets.experiments (pyproject.toml).
EXPERIMENTS_DIR = importlib.util.find_spec("fnets.experiments").submodule_search_locations[0]


# --- Loading: PATH.py[:ARG] and the --experiment=NAME[:ARG] short form.

def experiment_names() -> list[str]:
  """The experiments shipped in experiments/ (common.py holds the fields they share)."""
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
  """Raises ConfigError for an override that names no field of `config` or whose value does not fit its type.
  `--config.sweep.FIELD=(V1, V2, ...)` takes a tuple of FIELD's type (fnets/sweeps.py says which can be swept)."""
  valid = fields(config)
  for arg in args:
    name, sep, text = arg.removeprefix("--config.").partition("=")
    if not arg.startswith("--config.") or not sep:
      raise ConfigError(f"cannot read {arg!r}: write config overrides as --config.FIELD=VALUE")
    swept = name.removeprefix("sweep.") if name.startswith("sweep.") and name not in valid else None
    if (swept or name) not in valid:
      close = difflib.get_close_matches(swept or name, valid, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      what = f"--config.sweep.{swept}: the config has no field {swept!r}" if swept else \
          f"unknown config field {name!r}"
      raise ConfigError(f"{what}{hint}. Valid fields: {', '.join(valid)}")
    if swept:
      _parse(text, (get(config, swept),), name)
    else:
      _parse(text, get(config, name), name)


def is_new_sweep(config: ml_collections.ConfigDict, arg: str) -> bool:
  """Whether `arg` adds a field to the sweep (config_flags, which locks the config, cannot take it)."""
  name = arg.removeprefix("--config.").partition("=")[0]
  return arg.startswith("--config.sweep.") and name not in fields(config)


def override(config: ml_collections.ConfigDict, args: Sequence[str]) -> ml_collections.ConfigDict:
  """A copy of `config` with `--config.a.b=value` arguments applied (for notebooks and tests; the launcher, fnets/main.py, applies
  them through config_flags after `check_overrides`, and the new sweep fields through `add_sweep`)."""
  check_overrides(config, args)
  new = [a for a in args if is_new_sweep(config, a)]
  config = ml_collections.ConfigDict(config.to_dict())
  for arg in args:
    if arg in new:
      continue
    name, _, text = arg.removeprefix("--config.").partition("=")
    *parents, leaf = name.split(".")
    node = get(config, ".".join(parents)) if parents else config
    node[leaf] = _parse(text, node[leaf], name)
  return add_sweep(config, new)


def add_sweep(config: ml_collections.ConfigDict, args: Sequence[str]) -> ml_collections.ConfigDict:
  """`config` (changed in place, and returned) with `--config.sweep.FIELD=(values)` arguments added to its sweep
  section, each value of FIELD's type."""
  with config.unlocked():
    if "sweep" not in config:
      config.sweep = ml_collections.ConfigDict()
    for arg in args:
      name, _, text = arg.removeprefix("--config.sweep.").partition("=")
      default = get(config, name)
      values = _parse(text, (default,), f"sweep.{name}")
      values = tuple(map(float, values)) if isinstance(default, float) else values
      node = config.sweep
      *parents, leaf = name.split(".")
      for part in parents:
        if part not in node:
          node[part] = ml_collections.ConfigDict()
        node = node[part]
      node[leaf] = values
  return config


def from_json(recorded: dict) -> ml_collections.ConfigDict:
  """A config saved as config.json (lists back to tuples)."""
  fix = lambda v: {k: fix(x) for k, x in v.items()} if isinstance(v, dict) else (
      tuple(v) if isinstance(v, list) else v)
  return ml_collections.ConfigDict(fix(recorded))


# --- Checks: helpers for the `check(config)` of each module that reads fields (the loop combines them). A field
# the config does not have is skipped: each task has its own fields.

# Fields a run may change between starts: they do not change its result (a smoke run with max_steps can be
# continued into the full run; a resumed run may log or save more often).
FREE_FIELDS = ("data_dir", "max_steps", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
               "eval_batch_size", "sample_prompt", "sample_length", "sample_temperature", "profile_steps")

_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
RULES = {  # name → (test of one value, what the message says)
    "positive_int": (lambda v: _int(v) and v > 0, "must be a positive integer"),
    "int>=0": (lambda v: _int(v) and v >= 0, "must be an integer ≥ 0"),
    ">0": (lambda v: v > 0, "must be > 0"),
    ">=0": (lambda v: v >= 0, "must be ≥ 0"),
    "[0,1)": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "[0,1]": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "bool": (lambda v: isinstance(v, bool), "must be true or false"),
}


def fail(config, name: str, why: str):
  raise ConfigError(f"--config.{name}={get(config, name)!r}: {why}")


def has(config, name: str) -> bool:
  try:
    get(config, name)
    return True
  except (KeyError, AttributeError):
    return False


def require(config, rule: str, *names: str) -> None:
  """Raises ConfigError for the first of `names` whose value (each value of a tuple) breaks `rule` (RULES)."""
  test, why = RULES[rule]
  for name in names:
    if has(config, name):
      value = get(config, name)
      values = value if isinstance(value, (tuple, list)) else (value,)
      if not all(isinstance(v, (int, float)) and test(v) if rule != "bool" else test(v) for v in values):
        fail(config, name, why)


def one_of(config, name: str, choices) -> None:
  if has(config, name) and get(config, name) not in choices:
    fail(config, name, f"unknown choice; choose one of: {', '.join(map(str, choices))}")
