"""A run's directory: its record, its checkpoints, and what stops it (preemption, a non-finite loss).

    WORKDIR/config.json        the config; a later start with another config is refused
    WORKDIR/run.json           one record per start: command, versions, git commit, devices, seed
    WORKDIR/checkpoints/STEP   the last `keep_checkpoints` train states (Orbax)
    WORKDIR/best/STEP          the train state with the best eval metric
"""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
from importlib import metadata

import jax
import numpy as np
import orbax.checkpoint as ocp

from fnets import parallel


class RunError(RuntimeError):
  """A run that cannot start or go on; the message says why and what to do."""


class Preempted(Exception):
  def __init__(self, step: int, signum: int):
    super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
    self.step, self.signum = step, signum


# --- Run record and config check.

def _git_state() -> dict:
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return {"commit": None, "dirty": None}
  if commit.returncode:
    return {"commit": None, "dirty": None}
  return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _versions() -> dict:
  out = {"python": sys.version.split()[0]}
  for package in ("fnets", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy"):
    try:
      out[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      out[package] = None
  return out


def _config_diff(recorded: dict, current: dict, prefix: str = "") -> list[str]:
  lines = []
  for key in sorted(set(recorded) | set(current)):
    a, b = recorded.get(key, "<absent>"), current.get(key, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      lines += _config_diff(a, b, f"{prefix}{key}.")
    elif a != b:
      lines.append(f"  {prefix}{key}: recorded {a!r}, now {b!r}")
  return lines


def start(workdir: str, config) -> None:
  """Checks that `workdir` is writable and holds no run of another config; records this start. In a
  multi-process run every process checks, and process 0 writes."""
  current = json.loads(config.to_json())
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test.{jax.process_index()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise RunError(f"cannot write to workdir {workdir}: {e.strerror}. Choose another --workdir.") from None
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      recorded = json.load(f)
    if diff := _config_diff(recorded, current):
      raise RunError(f"workdir {workdir} holds a run with another config:\n" + "\n".join(diff) +
                     "\nUse another --workdir, rerun with the recorded config to resume it, or pass --fresh to move "
                     "the old run aside and start again.")
  elif parallel.is_primary():
    _write_atomic(config_path, json.dumps(current, indent=2) + "\n")
  if not parallel.is_primary():
    return
  record_path = os.path.join(workdir, "run.json")
  records = json.load(open(record_path)) if os.path.exists(record_path) else []
  records.append({"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": sys.argv, "seed": config.seed, "git": _git_state(), "versions": _versions(),
                  "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                  "processes": jax.process_count()})
  _write_atomic(record_path, json.dumps(records, indent=2) + "\n")


def move_aside(workdir: str) -> str | None:
  """For --fresh: renames an existing run directory to WORKDIR.old-TIMESTAMP (never deletes it)."""
  if not os.path.exists(workdir) or not os.listdir(workdir):
    return None
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  target = f"{workdir.rstrip('/')}.old-{stamp}"
  shutil.move(workdir, target)
  return target


def write_json(path: str, obj) -> None:
  _write_atomic(path, json.dumps(obj, indent=2) + "\n")


def _write_atomic(path: str, text: str):
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


# --- Checkpoints.

class Checkpoints:
  """The last `keep` train states, and the best by an eval metric. Orbax writes each checkpoint to a temporary
  directory and renames it only when complete, so a crash mid-save leaves no checkpoint that looks valid."""

  def __init__(self, workdir: str, keep: int, best_metric: str, best_mode: str):
    options = dict(enable_async_checkpointing=False, create=True, cleanup_tmp_directories=True)
    self._latest = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                         options=ocp.CheckpointManagerOptions(max_to_keep=keep, **options))
    self._best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m[best_metric], best_mode=best_mode,
                                             **options))
    self.directory = os.path.join(workdir, "checkpoints")

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def save(self, step: int, state, eval_metrics: dict | None = None):
    if step in self._latest.all_steps():
      return
    self._latest.save(step, args=ocp.args.StandardSave(state))
    if eval_metrics is not None:
      self._best.save(step, args=ocp.args.StandardSave(state), metrics=eval_metrics)

  def restore(self, like, best: bool = False):
    """The latest (or best) saved state shaped like `like`, or None if there is none."""
    manager = self._best if best else self._latest
    step = manager.best_step() if best else manager.latest_step()
    if step is None:
      return None
    where = os.path.join(str(manager.directory), str(step))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
      shapes = lambda tree: [(np.shape(x), np.dtype(x.dtype)) for x in jax.tree.leaves(tree)]
      if jax.tree.structure(restored) != jax.tree.structure(like) or shapes(restored) != shapes(like):
        raise ValueError("its arrays have other shapes or dtypes than this config's model and optimizer")
      return restored
    except Exception as e:  # Orbax raises many kinds; all mean this checkpoint cannot be used
      raise RunError(f"checkpoint {where} cannot be restored ({type(e).__name__}: {str(e)[:300]}).\n"
                     f"It was left as it is. If the config changed, use another --workdir or --fresh; if the "
                     f"checkpoint is damaged, move {where} away to resume from an earlier one.") from None

  def close(self):
    self._latest.close()
    self._best.close()


def restore_for_eval(workdir: str, like, best_metric: str, best_mode: str):
  """The best checkpoint of a run, else its latest; a RunError if it has none."""
  checkpoints = Checkpoints(workdir, 1, best_metric, best_mode)
  try:
    restored = checkpoints.restore(like, best=True) or checkpoints.restore(like)
  finally:
    checkpoints.close()
  if restored is None:
    raise RunError(f"{workdir} has no checkpoint to evaluate; train first (the same command without --mode=eval)")
  return restored


# --- What stops a run.

def check_finite(first_step: int, losses) -> None:
  """Raises RunError naming the first step (numbered from `first_step`) whose loss is NaN or infinite."""
  losses = np.asarray(losses)
  bad = np.flatnonzero(~np.isfinite(losses))
  if bad.size:
    raise RunError(f"the training loss is {losses[bad[0]]} at step {first_step + int(bad[0])}; the run stopped "
                   f"and keeps its last good checkpoint. Lower the learning rate or set --config.grad_clip_norm.")


class StopSignals:
  """Turns SIGTERM and SIGINT (Ctrl-C) into a flag that the loop checks after each step."""

  def __enter__(self):
    self.signum = None
    self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    self.signum = signum

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
