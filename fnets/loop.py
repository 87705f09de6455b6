"""The one training loop: `train_and_evaluate(config, workdir)` for every experiment, from the launcher or a
notebook; `evaluate_checkpoint` and `export` for a finished run. Each begins with `check(config)`.

A task module (fnets/tasks/: `classify` for images, `char_lm` for character language models) builds a `Task`:
the initial state, a jitted step, an evaluation of a split, and when to evaluate. Everything else, in this order,
is here:

  check (the config's fields and the workdir; nothing read or written) → setup (data, model, state; nothing
  written) → start record → restore the latest checkpoint
  → loop: train step; every log_every_steps a "train" record; every eval_every_steps an evaluation on the
    held-out split (its metric picks the best checkpoint) and a save; a stop signal, agreed by all processes,
    saves and raises runs.Preempted
  → final records: the test split, read now for the first time, of the final model ("test") and of the best
    checkpoint ("test_best").
"""

import os

import jax
import ml_collections
import numpy as np

from fnets import config as config_lib
from fnets import parallel, runs, sweeps
from fnets.run_log import RunLog, TrainWindow, console, metrics_line, show_console
from fnets.models import sequence
from fnets.errors import ConfigError
from fnets.state import Task, TrainState, by_path
from fnets.tasks import TASKS


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field whose value is out of range or not one of its choices: the loop's
  own fields, then those of the task's modules. Reads and writes nothing."""
  config_lib.one_of(config, "task", tuple(TASKS))
  config_lib.require(config, "positive_int", "log_every_steps", "keep_checkpoints")
  config_lib.require(config, "int>=0", "max_steps", "checkpoint_every_steps")
  try:
    profile_window(config.profile_steps)
  except ValueError:
    config_lib.fail(config, "profile_steps", 'write "A:B" with 0 ≤ A < B: the steps A..B-1 are traced')
  if config.init_from and not os.path.isdir(os.path.expanduser(config.init_from)):
    config_lib.fail(config, "init_from", "no such directory; give a run's workdir or WORKDIR/checkpoints/STEP")
  TASKS[config.task].check(config)
  sweeps.check(config)
  if config.init_from and sweeps.fields(config):
    config_lib.fail(config, "init_from", "a sweep starts its members from their seeds; drop init_from or the sweep")
  for values in sweeps.members(config):  # each member's values, as the single run it stands for
    try:
      TASKS[config.task].check(sweeps.point_config(config, values))
    except ConfigError as e:
      raise ConfigError(f"in the sweep, at {values}: {e}") from None


def setup(config: ml_collections.ConfigDict, workdir: str | None = None) -> Task:
  """The config's task; with the `workdir` of a run, the task uses what that run recorded of its data."""
  return TASKS[config.task].setup(config, workdir=workdir)


def step_of(state: TrainState) -> int:
  return int(np.max(parallel.to_host(state.step)))  # (one per member in an ensemble, all equal)


def num_params(params) -> int:
  return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(params)))


def param_summary(params) -> dict:
  """{layer: {"params": count, "shapes": {name: shape}}} for each top-level module of the params."""
  return {layer: {"params": num_params(tree), "shapes": {k: list(np.shape(x)) for k, x in by_path(tree).items()}}
          for layer, tree in params.items()}


def profile_window(spec: str) -> tuple[int, int] | None:
  """`"A:B"` → (A, B): steps A..B-1 are traced; "" → None; a ValueError unless 0 ≤ A < B."""
  if not spec:
    return None
  start, sep, stop = spec.partition(":")
  if not (sep and start.isdigit() and stop.isdigit() and int(start) < int(stop)):
    raise ValueError(spec)
  return int(start), int(stop)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, fresh: bool = False) -> dict:
  """Trains `config`'s task in `workdir`; returns {"eval": last validation metrics, "test": the final model's
  test metrics, "test_best": the best checkpoint's}.

  Rerunning with the same config and workdir resumes from the latest checkpoint, with the same result as an
  uninterrupted run. SIGTERM/Ctrl-C save a checkpoint and raise runs.Preempted. `fresh` moves an existing run
  aside (never deletes it) once the new one is ready to start."""
  show_console()
  check(config)
  runs.check_workdir(workdir, config, fresh)  # leaves the disk as it was: fails before any data is read
  task = setup(config, None if fresh else workdir)
  if fresh and parallel.is_primary() and (moved := runs.move_aside(workdir)):
    console.info("--fresh: the previous run in %s was moved to %s", workdir, moved)
  parallel.sync("fresh")  # no process starts before the old run is out of the way
  one = take(task.state, 0) if task.members else task.state  # (a sweep: each member's model)
  layers = param_summary(one.params)
  record = {**task.record, "params": num_params(one.params), "layers": layers}
  runs.start(workdir, config, task.files, {**record, **({"members": task.members} if task.members else {})})

  checkpoints = runs.Checkpoints(workdir, config.keep_checkpoints, task.best_metric, task.best_mode)
  log = None
  try:
    state = checkpoints.restore(task.state)
    if state is None and config.get("init_from"):  # fine-tuning: another run's weights, a fresh optimizer
      params, model_state = runs.restore_weights(config.init_from, task.state)
      state = task.state.replace(params=params, model_state=model_state)
      console.info("initialised from %s", config.init_from)
    state = state or task.state
    step = step_of(state)
    log = RunLog(workdir, task.total_steps, resume_step=step, config_json=config.to_json(indent=2))
    console.info("%s: %s parameters (%s)%s; %s; %d steps%s; workdir %s", config.task,
                 f"{num_params(one.params):,}", ", ".join(f"{k} {v['params']:,}" for k, v in layers.items()),
                 f", each of {len(task.members)} sweep members" if task.members else "",
                 task.summary, task.total_steps, f", resumed at step {step}" if step else "", workdir)
    members = [{"member": k, "sweep": values} for k, values in enumerate(task.members)] or None
    best_metrics = lambda val: (  # what the best checkpoint is chosen by: a sweep's, its members' mean
        {task.best_metric: float(np.mean([m[task.best_metric] for m in val]))} if members else val)
    window, val = TrainWindow(log, task.items_per_step * len(members or [0]), task.rate_name, members), None
    epoch = lambda: {"epoch": step / task.steps_per_epoch} if task.steps_per_epoch else {}
    profile = profile_window(config.profile_steps)

    with runs.StopSignals() as stop:
      while step < task.total_steps:
        if profile and step == profile[0]:
          jax.profiler.start_trace(os.path.join(workdir, "profile"))
        state, metrics = task.train_step(state, step)
        step += 1
        if profile and step == min(profile[1], task.total_steps):
          jax.block_until_ready(state)
          jax.profiler.stop_trace()
          console.info("profile of steps %d-%d written to %s", profile[0], step - 1, os.path.join(workdir, "profile"))
        window.add(metrics)
        last = step == task.total_steps
        if step % config.log_every_steps == 0 or last:
          window.write(step, epoch())
        evaluated = None
        if task.eval_every_steps and (step % task.eval_every_steps == 0 or last):
          val = task.evaluate(state, "validation")
          if members:
            log.write(step, "eval", [{**m, **epoch()} for m in val], members)
          else:
            log.write(step, "eval", {**val, **epoch()})
          evaluated = best_metrics(val)
          window.restart_clock()
        signum = stop.agreed()  # the same answer on every process: they save the same step together
        # A stop at an evaluating step saves after the evaluation, so that a resumed run neither skips nor repeats
        # it; the evaluation's metric goes with the save, for the best checkpoint.
        every = config.checkpoint_every_steps
        if evaluated or signum or last or (every and step % every == 0):
          window.check_finite(step)  # never save a NaN
          checkpoints.save(step, state, evaluated)
        if signum:
          raise runs.Preempted(step, signum)

    # --- Final records: the test split is read here for the first time (data of your own may have none).
    if val is None and task.eval_every_steps:
      # Resumed at the last step (killed in this stage): the last evaluation is in the records, not in memory;
      # it is evaluated again, the same values, and the best checkpoint saved if the kill came before it was.
      val = task.evaluate(state, "validation")
      checkpoints.save(step, state, best_metrics(val))
    if members:
      return sweep_result(config, task, state, val, log, workdir, step)
    test = task.evaluate(state, "test")
    if test is not None:
      log.write(step, "test", test)
      runs.crash_point("after_test")
    best_step = checkpoints.best_step()
    test_best = None
    if best_step is not None and test is not None:
      test_best = test if best_step == step else task.evaluate(checkpoints.restore(state, best=True), "test")
      test_best = {**test_best, "best_step": best_step}
      log.write(step, "test_best", test_best)
    if task.finish:
      task.finish(state, workdir)
    return {"eval": val, "test": test, "test_best": test_best}
  finally:
    if log:
      log.close()
    checkpoints.close()


def take(state, members):
  """The members `members` (indices) of a sweep's stacked state."""
  return jax.tree.map(lambda x: x[np.asarray(members)], state)


def sweep_result(config, task: Task, state, val: list[dict] | None, log: RunLog, workdir: str, step: int) -> dict:
  """The grid's validation statistics, the point they choose, and that point's test metrics (of its final
  models; no other point's test split is evaluated): printed, written to WORKDIR/sweep.json and returned."""
  summary = sweeps.summarize(config, val, task.best_metric, task.best_mode)
  chosen = summary["points"][summary["chosen"]]["members"]
  test = task.evaluate(take(state, chosen), "test")
  if test is not None:
    log.write(step, "test", test, [{"member": k, "sweep": task.members[k]} for k in chosen])
    runs.crash_point("after_test")
    summary["test"] = {m: sweeps.stats([t[m] for t in test]) for m, v in test[0].items() if isinstance(v, float)}
  if parallel.is_primary():
    runs.write_json(os.path.join(workdir, "sweep.json"), summary)
  console.info("%s\n(%s)", sweeps.table(summary), os.path.join(workdir, "sweep.json"))
  if task.finish:  # (the chosen point's first member: a language model's sample)
    task.finish(state, workdir, chosen[0])
  return {"eval": val, "test": test, "sweep": summary}


def _member(task: Task, member: int | None, workdir: str) -> None:
  if member is not None and not task.members:
    raise ConfigError(f"--member={member}: the run in {workdir} is not a sweep; drop --member")
  if member is not None and not 0 <= member < len(task.members):
    raise ConfigError(f"--member={member}: the sweep in {workdir} has {len(task.members)} members; give 0.."
                      f"{len(task.members) - 1} (sweep.json lists them)")


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, member: int | None = None) -> dict:
  """Validation and test metrics of a run's best (else latest) checkpoint, without training; also written to
  WORKDIR/eval.json. A sweep's: each member's (lists), or those of `member` only."""
  show_console()
  check(config)
  task = setup(config, workdir)
  _member(task, member, workdir)
  restored, step = runs.restore_for_eval(workdir, task.state, task.best_metric, task.best_mode)
  out = {"checkpoint_step": step, **({"member": member} if member is not None else {})}
  for split in ("validation", "test") if task.eval_every_steps else ("test",):
    metrics = task.evaluate(restored if member is None else take(restored, [member]), split)
    if metrics is not None:
      out[split] = metrics[0] if member is not None else metrics
  if parallel.is_primary():
    runs.write_json(os.path.join(workdir, "eval.json"), out)
  for split in ("validation", "test"):
    if split in out:
      shown = out[split] if isinstance(out[split], dict) else {
          f"mean of {len(out[split])} members: {k}": float(np.mean([m[k] for m in out[split]]))
          for k, v in out[split][0].items() if isinstance(v, float)}
      console.info("[%s] checkpoint step %d: %s", split, step, metrics_line(shown))
  return out


def export(config: ml_collections.ConfigDict, workdir: str, member: int | None = None) -> dict[str, str]:
  """Writes the weights of a run's best (else latest) checkpoint: WORKDIR/export/params.npz, one array per path
  ("params/Conv_0/kernel", "model_state/BatchNorm_0/mean", ...), and for the recurrent models
  WORKDIR/export/torch_state_dict.npz in PyTorch's names (models.sequence.torch_state_dict). Returns the paths.
  A sweep exports one `member`, as the single run it stands for."""
  show_console()
  check(config)
  task = setup(config, workdir)
  _member(task, member, workdir)
  if task.members and member is None:
    raise ConfigError(f"{workdir} holds a sweep of {len(task.members)} members: export one with --member=K "
                      f"(0..{len(task.members) - 1}; sweep.json lists them)")
  state, step = runs.restore_for_eval(workdir, task.state, task.best_metric, task.best_mode)
  state = jax.device_get(state if member is None else jax.tree.map(lambda x: x[member], state))
  out_dir = os.path.join(workdir, "export")
  arrays = {f"{part}/{name}": np.asarray(x) for part in ("params", "model_state")
            for name, x in by_path(runs.not_carried(getattr(state, part))).items()}
  paths = {"params": os.path.join(out_dir, "params.npz")}
  torch_names = sequence.torch_state_dict(config.model, state.params)
  if torch_names is not None:
    paths["torch"] = os.path.join(out_dir, "torch_state_dict.npz")
  if parallel.is_primary():
    os.makedirs(out_dir, exist_ok=True)
    np.savez(paths["params"], **arrays)
    if torch_names is not None:
      np.savez(paths["torch"], **{k: np.asarray(v) for k, v in torch_names.items()})
  console.info("exported the weights of checkpoint %d: %s", step, ", ".join(paths.values()))
  return paths
