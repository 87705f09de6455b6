"""Sweeps: seeds and hyperparameters trained together as one compiled program, and what their result says.

`config.sweep` maps fields to tuples of values (`--config.sweep.seed=(0,1,2) --config.sweep.learning_rate=(1e-3,3e-3)`);
the grid is their product. Each member of the grid is the run of one point and one seed: the tasks (fnets/tasks/)
stack the members' train states along a leading axis and `vmap` one step over them, with the swept values as
arrays (`member_arrays`), so one compilation serves every value. Only fields that leave the shapes alone can be
swept (SWEEPABLE). At the end the loop chooses the point with the best mean validation metric and evaluates the
test split of that point only (`summarize`). No JAX here.
"""

import itertools
import math

import ml_collections
import numpy as np

from fnets import config as config_lib
from fnets.errors import ConfigError

# Fields that enter the compiled step as values, not as shapes or as structure (e.g. the optimizer's kind).
SWEEPABLE = ("seed", "learning_rate", "weight_decay", "momentum", "grad_clip_norm", "lr_start_fraction",
             "lr_end_fraction", "label_smoothing", "warmup_epochs", "warmup_steps", "model.dropout")


def fields(config) -> list[str]:
  """The swept fields, dotted, in the order their values vary (the first slowest; the seed last, fastest)."""
  names = config_lib.fields(config.sweep) if config.get("sweep") else []
  return sorted(names, key=lambda n: (n == "seed", n))


def check(config) -> None:
  """Each swept field is one the config has and that can be swept, with at least one value, each valid: every
  point's config passes the task's checks (`check_point`)."""
  sweepable = [n for n in SWEEPABLE if config_lib.has(config, n)]
  for name in fields(config):
    values = config_lib.get(config.sweep, name)
    if not config_lib.has(config, name):
      raise ConfigError(f"--config.sweep.{name}: the config has no field {name!r}; fields that can be swept: "
                        f"{', '.join(sweepable)}")
    if name not in sweepable:
      raise ConfigError(f"--config.sweep.{name}: {name} changes the shapes or the structure of the compiled step, "
                        f"so it cannot be swept (run one job per value); fields that can: {', '.join(sweepable)}")
    if not isinstance(values, (tuple, list)) or not values:
      raise ConfigError(f"--config.sweep.{name}={values!r}: give a tuple of one or more values, e.g. "
                        f"--config.sweep.{name}=({config_lib.get(config, name)!r},)")
    if len(set(values)) != len(values):
      raise ConfigError(f"--config.sweep.{name}={tuple(values)!r}: a value appears twice; give each once")


def members(config) -> list[dict]:
  """Each member's values of the swept fields, the seed's varying fastest: [{"learning_rate": 0.001, "seed": 0},
  ...]. An empty list when the config sweeps nothing."""
  names = fields(config)
  if not names:
    return []
  grid = itertools.product(*(config_lib.get(config.sweep, n) for n in names))
  return [dict(zip(names, values)) for values in grid]


def num_points(config) -> int:
  """Points of the grid: combinations of the swept values but the seed's (0 without a sweep)."""
  sizes = [len(config_lib.get(config.sweep, n)) for n in fields(config) if n != "seed"]
  return int(np.prod(sizes)) if fields(config) else 0


def point_config(config, values: dict) -> ml_collections.ConfigDict:
  """The config of the single run a member stands for: `values` set, no sweep."""
  out = ml_collections.ConfigDict(config.to_dict())
  if "sweep" in out:
    out.sweep = ml_collections.ConfigDict()
  for name, value in values.items():
    _set(out, name, type(config_lib.get(config, name))(value))
  return out


def with_values(config, values: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with fields set to `values` that may be arrays (traced: a member's values inside the
  vmapped step); the tasks build the model and optimizer of a member from it."""
  out = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for name, value in values.items():
    _set(out, name, value)
  return out


def _set(config, name: str, value) -> None:
  *parents, leaf = name.split(".")
  node = config_lib.get(config, ".".join(parents)) if parents else config
  node[leaf] = value


def member_arrays(config) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(seeds_K int32, {field: values_K float32} of the other swept fields): the inputs of the vmapped init and
  step. A field not swept is not there: it stays a Python value, compiled in as in a single run."""
  rows = members(config)
  seeds = np.array([m.get("seed", config.seed) for m in rows], np.int32)
  return seeds, {n: np.array([m[n] for m in rows], np.float32) for n in fields(config) if n != "seed"}


def placement(num_members: int, num_devices: int, over_devices: bool, chunk: int) -> str:
  """How a sweep is laid out, for the run's first line."""
  where = (f" over {num_devices} devices" if over_devices else f", each member's batch split over {num_devices} "
           f"devices") if num_devices > 1 else ""
  chunks = f", {chunk} at a time" if chunk < num_members else ""
  return f"; a sweep of {num_members} members{where}{chunks}"


# --- The result: statistics over seeds, the point chosen on validation.

def stats(values) -> dict:
  """Mean, sample standard deviation and the half-width of the 95% confidence interval of the mean (Student's t
  with n − 1 degrees of freedom) of a metric over seeds; std and ci95 are 0 for one seed."""
  x = np.asarray(values, np.float64)
  n = len(x)
  std = float(np.std(x, ddof=1)) if n > 1 else 0.0
  from scipy import stats as scipy_stats  # (scipy comes with JAX)
  ci = float(scipy_stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else 0.0
  return {"mean": float(np.mean(x)), "std": std, "ci95": ci, "n": n}


def summarize(config, validation: list[dict] | None, metric: str, mode: str) -> dict:
  """The grid's points with the validation metrics' statistics over each point's seeds, and the point whose mean
  `metric` is best (`mode` "max" or "min"). `validation`: each member's metrics (None without a validation split:
  then the grid must have one point)."""
  rows = members(config)
  names = [n for n in fields(config) if n != "seed"]
  points = []
  for key, group in itertools.groupby(range(len(rows)), key=lambda k: tuple(rows[k].get(n) for n in names)):
    group = list(group)
    point = {"values": dict(zip(names, key)), "members": group,
             "seeds": [rows[k].get("seed", config.seed) for k in group]}
    if validation is not None:
      numeric = [m for m, v in validation[group[0]].items() if isinstance(v, float)]
      point["validation"] = {m: stats([validation[k][m] for k in group]) for m in numeric}
    points.append(point)
  if validation is None:
    chosen = 0
  else:
    means = [p["validation"][metric]["mean"] for p in points]
    chosen = int(np.argmax(means) if mode == "max" else np.argmin(means))
  return {"metric": metric, "mode": mode, "fields": fields(config), "points": points, "chosen": chosen}


def table(summary: dict) -> str:
  """The summary as text: one line per point, the chosen one marked, then the chosen point's test metrics."""
  metric = summary["metric"]
  lines = [f"sweep: {len(summary['points'])} point(s) × seeds; validation {metric}: mean ± 95% CI (std) over seeds"]
  for i, point in enumerate(summary["points"]):
    values = "  ".join(f"{k}={v:g}" for k, v in point["values"].items()) or "(the config's values)"
    s = point.get("validation", {}).get(metric)
    result = f"{s['mean']:.4f} ± {s['ci95']:.4f} ({s['std']:.4f}), n={s['n']}" if s else "no validation split"
    lines.append(f"{'*' if i == summary['chosen'] else ' '} {values:<40} {result}")
  if test := summary.get("test"):
    lines.append("test of the chosen point (*): " + "  ".join(
        f"{m} {s['mean']:.4f} ± {s['ci95']:.4f}" for m, s in test.items()))
  return "\n".join(lines)
