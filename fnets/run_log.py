"""What a run writes: metrics.jsonl (one JSON object per line), TensorBoard events, and console progress."""

import json
import logging
import os
import sys
import time

import jax
import numpy as np

from fnets import parallel, runs
from fnets.files import write_atomic

# fnets' own progress lines and warnings. A library attaches no handler on import: `show_console()` does, when a
# run starts (the loop) or the launcher starts.
console = logging.getLogger("fnets")


class _Stderr(logging.Handler):
  """Writes to whatever sys.stderr is when a line is logged (a notebook's or pytest's replaces it)."""

  def emit(self, record):
    print(self.format(record), file=sys.stderr, flush=True)


def show_console() -> None:
  """Shows fnets' INFO lines on stderr, in a terminal and in notebooks, unless the user has set up the "fnets"
  logger (a handler or a level of their own) already. Other libraries' INFO logs go through absl, which the
  launcher keeps at WARNING unless --verbosity=1."""
  if console.handlers or console.level != logging.NOTSET:
    return
  console.addHandler(_Stderr())
  console.setLevel(logging.INFO)
  console.propagate = False


def _summary_writer():
  """tensorboardX's SummaryWriter, imported when a run first writes. tensorboardX imports torch where it is
  installed, only to accept torch tensors (2 s of every run's start, measured); fnets writes Python floats, so
  torch is hidden from that import unless it is loaded already."""
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # (an import of it raises ImportError, which tensorboardX catches)
  try:
    from tensorboardX import SummaryWriter
  finally:
    if hide:
      del sys.modules["torch"]
  return SummaryWriter


class RunLog:
  """Appends `{"step", "split", metric: value}` records; only records, never state. In a multi-process run
  only process 0 writes (the metrics are global: every process holds the same values)."""

  def __init__(self, workdir: str, total_steps: int, resume_step: int = 0, config_json: str = ""):
    self._enabled = parallel.is_primary()
    if not self._enabled:
      return
    SummaryWriter = _summary_writer()
    path = os.path.join(workdir, "metrics.jsonl")
    _drop_records_after(path, resume_step)
    self._jsonl = open(path, "a")
    # On resume TensorBoard is told to drop the events past the checkpoint (written again from there), as
    # metrics.jsonl drops its records: no step shows twice.
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
    if config_json and not resume_step:
      self._tb.add_text("config", "    " + config_json.replace("\n", "\n    "), 0)  # (indented: shown as code)
    self._total_steps = total_steps
    self._start, self._start_step = time.time(), resume_step

  def write(self, step: int, split: str, metrics: dict | list[dict], members: list[dict] | None = None) -> None:
    """One record; for a sweep, `metrics` is a list (one per member) and each member's record carries its
    `members` entry ({"member": index, "sweep": {field: value}}); the console shows their mean."""
    if not self._enabled:
      return
    rows = [metrics] if members is None else [{**member, **m} for member, m in zip(members, metrics, strict=True)]
    for row in rows:
      record = {"step": int(step), "split": split, **{k: _scalar(v) for k, v in row.items()}}
      self._jsonl.write(json.dumps(record) + "\n")
      tag = f"/member_{row['member']}" if members is not None else ""
      for name, value in record.items():
        if name not in ("step", "member") and isinstance(value, (int, float)):
          self._tb.add_scalar(f"{split}/{name}{tag}", value, step)
    self._jsonl.flush()
    self._tb.flush()
    if members is None:
      text = metrics_line({k: _scalar(v) for k, v in metrics.items()})
    else:
      numeric = [k for k, v in metrics[0].items() if isinstance(_scalar(v), (int, float))]
      text = f"mean of {len(metrics)} members: " + metrics_line(
          {k: float(np.mean([m[k] for m in metrics])) for k in numeric})
    eta = ""
    if split == "train" and self._start_step < step < self._total_steps:
      per_step = (time.time() - self._start) / (step - self._start_step)
      eta = f"  ETA {_duration(per_step * (self._total_steps - step))}"
    console.info("[%s] step %d/%d  %s%s", split, step, self._total_steps, text, eta)

  def close(self):
    if not self._enabled:
      return
    self._jsonl.close()
    self._tb.close()


class TrainWindow:
  """The metrics of the training steps since the last "train" record, written as their means. Keeps at most one
  step in flight, so that a stop signal is honoured within a step, not after all the steps JAX dispatched ahead."""

  def __init__(self, log: RunLog, items_per_step: int, rate_name: str, members: list[dict] | None = None):
    self._log, self._items_per_step, self._rate_name, self._members = log, items_per_step, rate_name, members
    self._metrics, self._start = [], time.time()

  def add(self, metrics: dict) -> None:
    self._metrics.append(metrics)
    if len(self._metrics) > 1:
      jax.block_until_ready(self._metrics[-2])

  def check_finite(self, step: int) -> list:
    """Raises runs.RunError if a loss since the last record is NaN or infinite; returns the metrics on host."""
    host = parallel.to_host(self._metrics)
    runs.check_finite(step - len(host) + 1, [np.sum(m["loss"]) for m in host])  # (one loss per sweep member)
    return host

  def write(self, step: int, extra: dict | None = None) -> None:
    host = self.check_finite(step)
    means = {k: np.mean([m[k] for m in host], axis=0) for k in host[0]}  # (a sweep's: one per member)
    means[self._rate_name] = len(host) * self._items_per_step / (time.time() - self._start)
    if self._members is None:
      self._log.write(step, "train", {**means, **(extra or {})})
    else:
      rows = [{k: v if np.ndim(v) == 0 else v[i] for k, v in {**means, **(extra or {})}.items()}
              for i in range(len(self._members))]
      self._log.write(step, "train", rows, self._members)
    self._metrics = []
    self.restart_clock()

  def restart_clock(self) -> None:
    """After an evaluation: its time is not training throughput."""
    self._start = time.time()


def _drop_records_after(path: str, step: int) -> None:
  """On resume, the records written after the checkpoint (and the final "test" ones) are dropped: the resumed
  run writes them again. The file is replaced atomically, so a crash here loses nothing."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:  # a line cut short by a kill
      continue
    if record["step"] <= step and not record["split"].startswith("test"):
      keep.append(line)
  if len(keep) != len(lines):
    write_atomic(path, "".join(keep))


def _scalar(v):
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


def metrics_line(metrics: dict) -> str:
  """`loss 0.1234  accuracy 0.9876 ...` for the console; lists are left out."""
  return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                   if not isinstance(v, list))


def _duration(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
