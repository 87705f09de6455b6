"""Command-line overrides of plain-data configs: `--config.FIELD=VALUE`, type-checked against the default."""

import ast
import difflib
from collections.abc import Sequence

import ml_collections


class ConfigError(ValueError):
  """A config field or value that does not exist or does not fit; the message says what would."""


def _parse(text: str, default, field: str):
  """Parses `text` into the type of `default`."""
  want = type(default).__name__
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
    raise ConfigError(f"--config.{field}={text!r}: expected a {want} like {default!r}") from None
  if isinstance(default, (tuple, list)):
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    kinds = {type(v) for v in default}
    if kinds and not all(type(v) in kinds or (float in kinds and type(v) is int) for v in value):
      raise ConfigError(f"--config.{field}={text!r}: expected a tuple like {default!r}")
  elif default is not None and type(value) is not type(default):
    raise ConfigError(f"--config.{field}={text!r}: expected a {want} like {default!r}")
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


def override(config: ml_collections.ConfigDict, args: Sequence[str]) -> ml_collections.ConfigDict:
  """Returns a copy of `config` with `--config.a.b=value` arguments applied; raises ConfigError on bad ones."""
  config = ml_collections.ConfigDict(config.to_dict())
  valid = fields(config)
  for arg in args:
    name, sep, text = arg.removeprefix("--config.").partition("=")
    if not arg.startswith("--config.") or not sep:
      raise ConfigError(f"cannot read {arg!r}: write config overrides as --config.FIELD=VALUE")
    if name not in valid:
      close = difflib.get_close_matches(name, valid, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise ConfigError(f"unknown config field {name!r}{hint}. Valid fields: {', '.join(valid)}")
    *parents, leaf = name.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = _parse(text, node[leaf], name)
  return config
