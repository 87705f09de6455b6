"""The command line: `fnets`, `python -m fnets` and `python launch.py` (a checkout) are this `run()`.

  fnets --list                                        # the experiments and their variants
  fnets --experiment=cnn_mnist --config.num_epochs=2  # short for --config=experiments/cnn_mnist.py
  fnets --experiment=lstm_shakespeare:rnn             # a variant: get_config("rnn")
  fnets --config=my_configs/wide_cnn.py --workdir=/tmp/wide

Every device of the machine is used (the global batch is split over them). Multi-host: run the same command on
every host with --distributed (TPU pods, SLURM: JAX finds the rest), or with --coordinator_address,
--num_processes and --process_id.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

import fnets  # noqa: F401  (sets XLA flags before JAX starts)
from fnets import config as config_lib
from fnets.errors import ConfigError, UsageError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file PATH.py[:ARG] defining get_config(); override fields with --config.FIELD=VALUE.",
    lock_config=True)
flags.DEFINE_string("experiment", None, "NAME[:ARG]: short for --config=experiments/NAME.py[:ARG].")
flags.DEFINE_string("workdir", None,
                    "Directory for config, metrics and checkpoints (default /tmp/fnets_runs/NAME).")
flags.DEFINE_bool("list", False, "List the experiments and their variants, and exit.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "export"], "train (resuming from the workdir's latest "
                  "checkpoint); eval: validation and test metrics of the workdir's best (else latest) checkpoint; "
                  "export: that checkpoint's weights as WORKDIR/export/*.npz.")
flags.DEFINE_integer("member", None, "With --mode=eval or export of a sweep: that member only (its index in "
                     "metrics.jsonl and sweep.json); export writes it as an ordinary run's weights.")
flags.DEFINE_bool("fresh", False, "Start again: move an existing run in --workdir aside to WORKDIR.old-TIMESTAMP.")
flags.DEFINE_bool("distributed", False, "Join a multi-process run through jax.distributed, with the settings JAX "
                  "detects (TPU pod, SLURM, ...). Implied by --coordinator_address.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 of a multi-process run.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run, 0..num_processes-1.")
FLAGS = flags.FLAGS
_NEW_SWEEP_ARGS = []  # --config.sweep.FIELD=... naming fields the config file's sweep lacks: added after parsing


def fail(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def list_experiments() -> str:
  lines = []
  for name in config_lib.experiment_names():
    module = config_lib.load_module(config_lib.experiment_path(name))
    lines.append(f"{name:<18} {(module.__doc__ or '').strip().splitlines()[0]}")
    for arg, description in getattr(module, "VARIANTS", {}).items():
      lines.append(f"  {name}:{arg:<{16 - len(name)}} {description}")
  return "\n".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flags, with --experiment=NAME expanded to --config=PATH and every --config.FIELD=VALUE checked against
  the config file first, so that each mistake is one line (config_flags' own errors are tracebacks, or none)."""
  try:
    args = argv[1:]
    if experiments := [a for a in args if a.startswith("--experiment=")]:
      if any(a.startswith("--config=") for a in args):
        raise ConfigError("give --experiment=NAME or --config=PATH, not both")
      spec = config_lib.experiment_path(experiments[-1].removeprefix("--experiment="))
      args = [f"--config={spec}"] + [a for a in args if a not in experiments]
    overrides = [a for a in args if a.startswith("--config.")]
    if bad := [a for a in args if a.startswith("--config") and not a.startswith(("--config=", "--config."))]:
      raise ConfigError(f"cannot read {bad[0]!r}: write --config=PATH.py[:ARG] and --config.FIELD=VALUE")
    if specs := [a.removeprefix("--config=") for a in args if a.startswith("--config=")]:
      loaded = config_lib.load(specs[-1])
      config_lib.check_overrides(loaded, overrides)
      _NEW_SWEEP_ARGS[:] = [a for a in overrides if config_lib.is_new_sweep(loaded, a)]
      args = [a for a in args if a not in _NEW_SWEEP_ARGS]
    elif overrides:
      raise ConfigError(f"{overrides[0]} needs a config: add --experiment=NAME or --config=PATH.py")
    if positional := [a for a in args if not a.startswith("-")]:
      raise ConfigError(f"unexpected argument {positional[0]!r}; flags are written --name=value (see --helpshort)")
    sys.argv[1:] = args  # (config_flags reads its overrides from sys.argv)
    return FLAGS([argv[0], *args])
  except flags.Error as e:
    fail(str(e).splitlines()[0])
  except UsageError as e:
    fail(str(e))


def main(argv):
  del argv  # everything is in FLAGS
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # other libraries' INFO logs (Orbax, TFDS); fnets' own lines stay
  if FLAGS.list:
    print(list_experiments())
    return
  from fnets import loop, parallel, run_log, runs  # (imports JAX: after the flags are known to be good)
  run_log.show_console()
  try:
    if FLAGS.workdir is not None and not FLAGS.workdir.strip():
      raise UsageError("--workdir= is empty: give the run's directory (--workdir=DIR), or leave the flag out for "
                       "/tmp/fnets_runs/NAME")
    spec = config_flags.get_config_filename(FLAGS["config"]) if FLAGS["config"].present else None
    if FLAGS.mode != "train" and FLAGS.workdir and spec is None:
      config = runs.recorded_config(FLAGS.workdir)  # --mode=eval --workdir=DIR: the run's own config
    elif spec is None:
      raise ConfigError("no config: give --experiment=NAME or --config=PATH.py (see --list)")
    else:
      config = config_lib.add_sweep(FLAGS.config, _NEW_SWEEP_ARGS)
    loop.check(config)
    # (Not /tmp/fnets: a directory named like the package shadows an editable install for Python started in /tmp.)
    workdir = FLAGS.workdir or f"/tmp/fnets_runs/{config_lib.run_name(spec)}"
    parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, auto=FLAGS.distributed)
    if FLAGS.mode != "train":
      runs.check_workdir(workdir, config)  # the run's config, up to the fields that do not change results
      finished_run = loop.evaluate_checkpoint if FLAGS.mode == "eval" else loop.export
      finished_run(runs.recorded_config(workdir), workdir, member=FLAGS.member)
    else:
      loop.train_and_evaluate(config, workdir, fresh=FLAGS.fresh)
  except runs.Preempted as e:
    print(f"{e}: checkpoint saved in {workdir}; run the same command to resume.", file=sys.stderr)
    sys.exit(128 + e.signum)
  except UsageError as e:
    fail(str(e))


def run():
  """The entry point of the `fnets` command."""
  app.run(main, flags_parser=parse_flags)
