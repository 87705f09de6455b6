"""The types the task modules (fnets/tasks/) hand to the loop (fnets/loop.py): the train state and the task."""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32; one per member in a sweep
  params: Any
  opt_state: Any
  model_state: Any  # e.g. batch-norm statistics, the recurrent state carried between windows; {} if none


@dataclasses.dataclass(frozen=True)
class Task:
  """What a task module's `setup(config)` supplies; the loop does the rest."""
  state: TrainState  # the initial train state, placed on the devices
  train_step: Callable[[TrainState, int], tuple[TrainState, dict]]  # runs step `step` (its batch follows from it)
  evaluate: Callable[[TrainState, str], dict]  # metrics of split "validation" or "test" (a list: a sweep's)
  total_steps: int
  eval_every_steps: int  # 0: no held-out evaluation during training (and no best checkpoint)
  best_metric: str  # the validation metric that picks the best checkpoint
  best_mode: str  # "max" or "min"
  items_per_step: int  # examples (or characters) per step, for the throughput
  rate_name: str
  steps_per_epoch: int = 0  # > 0: records carry the epoch
  summary: str = ""  # one line about the data, printed at the start
  members: list[dict] = dataclasses.field(default_factory=list)  # a sweep's members' values (fnets/sweeps.py)
  record: dict = dataclasses.field(default_factory=dict)  # what the model follows from the data, for run.json
  files: dict[str, str] = dataclasses.field(default_factory=dict)  # written into the workdir at the start
  # After the final records (e.g. write a sample): finish(state, workdir, member) (a sweep's: of one member).
  finish: Callable[[TrainState, str, int | None], None] | None = None
  context: dict = dataclasses.field(default_factory=dict)  # data, model, vocab...: for notebooks


def path_name(key_path) -> str:
  """A pytree key path as fnets names parameters: "Conv_0/kernel", "cells/0/W"."""
  return jax.tree_util.keystr(key_path, simple=True, separator="/")


def by_path(tree) -> dict:
  """{"a/b/0/c": leaf} of a tree."""
  return {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
