"""Runs an experiment: python launch.py --experiment=NAME [--workdir=DIR] [--config.FIELD=VALUE ...]

  python launch.py --list                                   # experiments, one line each
  python launch.py --experiment=cnn_mnist --config.num_epochs=2 --config.learning_rate=0.05

Every device of the machine is used (the global batch is split over them). Multi-host: run the same command on
every host with --distributed (TPU pods, SLURM: JAX finds the rest), or with --coordinator_address,
--num_processes and --process_id.
"""

import importlib
import pkgutil
import sys

from absl import app, flags, logging

import fnets  # noqa: F401  (sets XLA flags before JAX starts)
import experiments
from fnets import config as config_lib

flags.DEFINE_string("experiment", None, "Experiment to run: a file experiments/NAME.py.")
flags.DEFINE_string("workdir", None,
                    "Directory for config, metrics and checkpoints (default /tmp/fnets_runs/NAME).")
flags.DEFINE_bool("list", False, "List the experiments and exit.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resuming from the workdir's latest checkpoint), or "
                  "eval: test metrics of the workdir's best (else latest) checkpoint, without training.")
flags.DEFINE_bool("fresh", False, "Start again: move an existing run in --workdir aside to WORKDIR.old-TIMESTAMP.")
flags.DEFINE_bool("distributed", False, "Join a multi-process run through jax.distributed, with the settings JAX "
                  "detects (TPU pod, SLURM, ...). Implied by --coordinator_address.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 of a multi-process run.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run, 0..num_processes-1.")
FLAGS = flags.FLAGS


def available() -> dict[str, str]:
  """{name: one-line description} of every experiment file."""
  out = {}
  for info in pkgutil.iter_modules(experiments.__path__):
    module = importlib.import_module(f"experiments.{info.name}")
    if hasattr(module, "get_config"):
      out[info.name] = (module.__doc__ or "").strip().splitlines()[0]
  return out


def fail(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  config_args = [a for a in argv[1:] if a.startswith("--config.")]
  if extra := [a for a in argv[1:] if a not in config_args]:
    fail(f"unexpected arguments {extra}; see --helpshort")
  names = available()
  if FLAGS.list:
    width = max(map(len, names))
    print("\n".join(f"{name:<{width}}  {doc}" for name, doc in sorted(names.items())))
    return
  if FLAGS.experiment not in names:
    fail(f"unknown experiment {FLAGS.experiment!r}; choose one of: {', '.join(sorted(names))}")
  module = importlib.import_module(f"experiments.{FLAGS.experiment}")
  try:
    config = config_lib.override(module.get_config(), config_args)
  except config_lib.ConfigError as e:
    fail(str(e))
  # (Not /tmp/fnets: a directory named like the package shadows an editable install for Python started in /tmp.)
  workdir = FLAGS.workdir or f"/tmp/fnets_runs/{FLAGS.experiment}"
  logging.info("experiment %s, workdir %s\n%s", FLAGS.experiment, workdir, config)
  trainer = importlib.import_module(getattr(module, "TRAINER", "fnets.train"))
  from fnets import parallel, runs
  from fnets.data.tfds_source import DataError
  parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, auto=FLAGS.distributed)
  try:
    if FLAGS.mode == "eval":
      trainer.evaluate_checkpoint(config, workdir)
      return
    if FLAGS.fresh and parallel.is_primary() and (moved := runs.move_aside(workdir)):
      logging.info("--fresh: the previous run in %s was moved to %s", workdir, moved)
    parallel.sync("fresh")  # no process starts before the old run is out of the way
    trainer.train_and_evaluate(config, workdir)
  except runs.Preempted as e:
    print(f"{e}: checkpoint saved in {workdir}; run the same command to resume.", file=sys.stderr)
    sys.exit(128 + e.signum)
  except (DataError, runs.RunError, ValueError) as e:
    fail(str(e))


def parse_flags(argv):
  """absl parses its own flags; the --config.* overrides are passed through to main."""
  config_args = [a for a in argv[1:] if a.startswith("--config.")]
  return FLAGS([a for a in argv if a not in config_args]) + config_args


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
