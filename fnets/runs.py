"""A run's directory: its record, its checkpoints, and what stops it (preemption, a non-finite loss).

    WORKDIR/config.json        the config of the latest start; a start with another config is refused
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
from jax.experimental import multihost_utils

from fnets import config as config_lib
from fnets import parallel
from fnets.errors import RunError
from fnets.files import write_atomic
from fnets.state import by_path, path_name


def crash_point(name: str) -> None:
  """A point between two writes of a run (after_latest_save:STEP, after_best_save:STEP, after_test).
  FNETS_CRASH_AT=NAME kills the process there (SIGKILL, as a preemption without warning would), for checking that a
  resume from there ends as an uninterrupted run."""
  if os.environ.get("FNETS_CRASH_AT") == name:
    os.kill(os.getpid(), signal.SIGKILL)


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
      lines.append(f"{prefix}{key}: recorded {a!r}, now {b!r}")
  return lines


def _read_json(path: str):
  """The JSON in `path`; a RunError naming the file if it is damaged (it is left as it is)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RunError(f"{path} is damaged ({type(e).__name__}: {e}); it was left as it is: restore it, or pass "
                   f"--fresh to move the run aside and start again, or use another --workdir") from None


def _check_creatable(workdir: str) -> None:
  """A workdir that could not be created or written fails here, before any data is read. Nothing is created:
  every process of a multi-process run checks the same new workdir at once (a trial mkdir and rmdir raced there)."""
  missing, path = [], os.path.abspath(workdir)
  while not os.path.exists(path):
    missing.append(path)
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    raise RunError(f"--workdir={workdir}: {path} is a file, not a directory; choose another --workdir")
  if not os.access(path, os.W_OK | os.X_OK):
    where = f"cannot be created (Permission denied: {path})" if missing else "is not writable"
    raise RunError(f"--workdir={workdir} {where}; choose another --workdir")
  name_max = os.pathconf(path, "PC_NAME_MAX")
  if too_long := [d for d in missing if len(os.path.basename(d).encode()) > name_max]:
    raise RunError(f"--workdir={workdir} cannot be created (File name too long: {too_long[-1]}); choose another "
                   f"--workdir")


def check_workdir(workdir: str, config, fresh: bool = False) -> None:
  """Checks before a run reads any data, leaving the disk as it was: `workdir` can be created and written, its
  records can be read, and it holds no run of another config (fields in config.FREE_FIELDS may differ: they do
  not change the result). With `fresh` the old run will be moved aside, so its config does not matter."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise RunError(f"--workdir={workdir} is a file, not a directory; choose another --workdir")
  _check_creatable(workdir)
  config_path = os.path.join(workdir, "config.json")
  if fresh or not os.path.exists(config_path):
    return
  recorded = _read_json(config_path)
  if os.path.exists(record_path := os.path.join(workdir, "run.json")):
    _read_json(record_path)  # start() appends to it
  current = json.loads(config.to_json())
  for name in config_lib.FREE_FIELDS:
    recorded.pop(name, None), current.pop(name, None)
  if diff := _config_diff(recorded, current):
    raise RunError(f"workdir {workdir} holds a run with another config ({'; '.join(diff)}); use another "
                   f"--workdir, rerun with the recorded config to resume it, or pass --fresh to move the old run "
                   f"aside and start again")


def recorded_config(workdir: str):
  """The config of the run in `workdir` (its config.json)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise RunError(f"{workdir} holds no run (no config.json); give the workdir of a run, or train first")
  return config_lib.from_json(_read_json(path))


def start(workdir: str, config, files: dict[str, str] | None = None, summary: dict | None = None) -> None:
  """Records a start that has passed every check and read its data: config.json (this start's config), `files`,
  and one more record in run.json. In a multi-process run process 0 writes."""
  os.makedirs(workdir, exist_ok=True)
  if not parallel.is_primary():
    return
  write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
  for name, text in (files or {}).items():
    write_atomic(os.path.join(workdir, name), text)
  record_path = os.path.join(workdir, "run.json")
  records = _read_json(record_path) if os.path.exists(record_path) else []
  records.append({"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": sys.argv, "seed": config.seed, "git": _git_state(), "versions": _versions(),
                  "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                  "processes": jax.process_count(), "cpu_cores": os.cpu_count(),
                  "xla_flags": os.environ.get("XLA_FLAGS", ""), **(summary or {})})
  write_atomic(record_path, json.dumps(records, indent=2) + "\n")


def move_aside(workdir: str) -> str | None:
  """For --fresh: renames an existing run directory to WORKDIR.old-TIMESTAMP (never deletes it)."""
  if not os.path.exists(workdir) or not os.listdir(workdir):
    return None
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  target = f"{workdir.rstrip('/')}.old-{stamp}"
  shutil.move(workdir, target)
  return target


def write_json(path: str, obj) -> None:
  write_atomic(path, json.dumps(obj, indent=2) + "\n")


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

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def best_step(self) -> int | None:
    return self._best.best_step()

  def save(self, step: int, state, eval_metrics: dict | None = None):
    """The latest checkpoint, and with `eval_metrics` the best one's candidate: each only if not saved yet, so
    that a run resumed between the two saves makes the second."""
    if step not in self._latest.all_steps():
      self._latest.save(step, args=ocp.args.StandardSave(state))
    crash_point(f"after_latest_save:{step}")
    if eval_metrics is not None and step not in self._best.all_steps():
      self._best.save(step, args=ocp.args.StandardSave(state), metrics=eval_metrics)
      crash_point(f"after_best_save:{step}")

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
  """(state, step) of the best checkpoint of a run, else of its latest; a RunError if it has none."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise RunError(f"{workdir} has no checkpoint to evaluate; train first (the same command without --mode=eval)")
  checkpoints = Checkpoints(workdir, 1, best_metric, best_mode)
  try:
    best = checkpoints.best_step() is not None
    restored = checkpoints.restore(like, best=best)
    step = checkpoints.best_step() if best else checkpoints.latest_step()
  finally:
    checkpoints.close()
  if restored is None:
    raise RunError(f"{workdir} has no checkpoint to evaluate; train first (the same command without --mode=eval)")
  return restored, step


def _step_dir(path: str) -> str:
  """The checkpoint directory `path` names: a run's best checkpoint (else its latest), or a checkpoint itself."""
  path = os.path.expanduser(path)
  if os.path.isdir(os.path.join(path, "default")):
    return path
  for sub in ("best", "checkpoints"):
    steps = sorted((int(d) for d in os.listdir(os.path.join(path, sub)) if d.isdigit()), reverse=True) \
        if os.path.isdir(os.path.join(path, sub)) else []
    if steps:
      return os.path.join(path, sub, str(steps[0]))
  raise RunError(f"--config.init_from={path}: no checkpoint there; give a run's workdir or one of its "
                 f"checkpoints (WORKDIR/checkpoints/STEP)")


def restore_weights(path: str, like) -> tuple:
  """(params, model_state) of the checkpoint at `path` (a run's workdir: its best checkpoint, else its latest; or
  WORKDIR/checkpoints/STEP), placed like `like`'s; a RunError naming the arrays whose shapes differ."""
  where = _step_dir(path)
  with ocp.StandardCheckpointer() as checkpointer:
    saved = checkpointer.restore(os.path.join(where, "default"))
  out = []
  for part in ("params", "model_state"):
    target, have = not_carried(getattr(like, part)), by_path(not_carried(saved.get(part, {})))
    want = by_path(target)
    shape = lambda d, k: tuple(np.shape(d[k])) if k in d else "absent"
    if diff := [f"{part}/{k}: {shape(have, k)} there, {shape(want, k)} here"
                for k in sorted(set(want) | set(have)) if shape(want, k) != shape(have, k)]:
      raise RunError(f"--config.init_from={path}: {where} does not fit this model ({'; '.join(diff[:6])}"
                     f"{'; ...' if len(diff) > 6 else ''}); use a run of the same model")
    place = lambda p, t: jax.device_put(
        np.asarray(have[path_name(p)]).astype(t.dtype), t.sharding)
    out.append(jax.tree_util.tree_map_with_path(place, target))
  params, model_state = out
  if "carry" in like.model_state:  # the fresh run's own (zero) carried state
    model_state = {**model_state, "carry": like.model_state["carry"]}
  return params, model_state


def not_carried(model_state):
  """`model_state` without the recurrent state carried between training windows (`model_state["carry"]`, truncated
  BPTT in fnets/tasks/char_lm.py): a record of the data read so far rather than a weight, so fine-tuning
  (`init_from`) starts it afresh and export leaves it out."""
  return {k: v for k, v in model_state.items() if k != "carry"} if isinstance(model_state, dict) else model_state


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

  def agreed(self) -> int | None:
    """The signal that any process got, or None: the same answer on every process, so that all of them stop
    after the same step (one that stopped alone would wait forever in the next collective of the others)."""
    if jax.process_count() == 1:
      return self.signum
    signums = multihost_utils.process_allgather(np.int32(self.signum or 0))
    return int(np.max(signums)) or None

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
