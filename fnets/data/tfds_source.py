"""Opens a TFDS dataset as random-access data sources, preparing it if missing, failing fast when offline.

`tfds.load` retries a missing download for minutes when there is no network; here a missing dataset is
prepared only after a quick connectivity check and where TensorFlow is installed (TFDS's download_and_prepare
needs it; fnets' `data` extra installs it), and otherwise raises `DataError` saying how to provide it.
"""

import difflib
import importlib.util
import os
import socket

import tensorflow_datasets as tfds

from fnets.errors import DataError

# Hosts the TFDS builders of fnets' datasets download from; one reachable host is enough to try.
_DOWNLOAD_HOSTS = ("storage.googleapis.com", "www.cs.toronto.edu", "raw.githubusercontent.com")

# Installs TensorFlow, which TFDS's download_and_prepare needs (fnets' base install has none).
INSTALL_DATA_EXTRA = 'pip install "fnets[data]" (from a checkout: pip install -e ".[data]")'


def resolve_data_dir(data_dir: str | None) -> str:
  """`data_dir` if given, else $TFDS_DATA_DIR, else TFDS's default (~/tensorflow_datasets)."""
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def _online(timeout_s: float = 3.0) -> bool:
  for host in _DOWNLOAD_HOSTS:
    try:
      socket.create_connection((host, 443), timeout=timeout_s).close()
      return True
    except OSError:
      continue
  return False


def _tensorflow_installed() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def open_source(name: str, data_dir: str | None, splits: tuple[str, ...], features: tuple[str, ...]) -> dict:
  """Returns {split: random-access source of example dicts} for TFDS dataset `name` (e.g. 'cifar10'), whose
  examples must have `features` (the task's: image and label, or text). A split may be a TFDS slice such as
  'train[:90%]'."""
  data_dir = resolve_data_dir(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    close = difflib.get_close_matches(name, tfds.list_builders(with_community_datasets=False), n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise DataError(f"TFDS has no dataset named {name!r}: {hint}its names are listed by python -c \"import "
                    f"tensorflow_datasets as t; print(t.list_builders(with_community_datasets=False))\"; files of your own: text:PATH, "
                    f"folder:PATH, npz:PATH") from None
  if missing := [f for f in features if f not in builder.info.features]:
    raise DataError(f"{name}'s examples have {', '.join(sorted(builder.info.features))}, not "
                    f"{' and '.join(missing)}, which this experiment needs: give a dataset with "
                    f"{' and '.join(features)} (or an experiment for {name}'s kind of data; see --list)")
  where = os.path.join(data_dir, name, str(builder.version))
  if not builder.is_prepared():
    # One line each: what is missing, where, and the commands that provide it.
    if not _online():
      raise DataError(
          f"dataset {name} {builder.version} is not prepared in {where} and there is no network to download it: "
          f"point fnets at a TFDS data dir that holds it (--config.data_dir=DIR or TFDS_DATA_DIR=DIR), or on a "
          f"machine with network install TensorFlow with {INSTALL_DATA_EXTRA}, run fnets once and copy that data "
          f"dir's {name}/ into {data_dir}")
    if not _tensorflow_installed():
      raise DataError(
          f"dataset {name} {builder.version} is not prepared in {where}, and preparing it (TFDS's "
          f"download_and_prepare) needs TensorFlow, which is not installed: install it with {INSTALL_DATA_EXTRA}, "
          f"or point fnets at a TFDS data dir that holds it (--config.data_dir=DIR or TFDS_DATA_DIR=DIR)")
    builder.download_and_prepare(file_format="array_record")
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise DataError(f"{where} holds {builder.info.file_format.value} files; fnets reads array_record. Prepare it "
                    f"again with download_and_prepare(file_format='array_record') into another data dir.")
  try:
    return {split: builder.as_data_source(split=split) for split in splits}
  except (KeyError, ValueError) as e:
    raise DataError(f"{name} has no split {e}; it has {sorted(builder.info.splits)}") from None


def read_all(source) -> list:
  """Every example of a data source, in order; a DataError naming the dataset's files if they cannot be read
  (array_record raises RuntimeError on a damaged or cut-short file)."""
  try:
    return [source[i] for i in range(len(source))]
  except RuntimeError as e:
    where = source.dataset_info.data_dir
    raise DataError(f"the files of {source.dataset_info.name} in {where} cannot be read ({str(e).splitlines()[0][:200]}); "
                    f"they are damaged or incomplete: prepare the dataset again (delete {where} and rerun with "
                    f"network and TensorFlow), or copy it again from where it was prepared") from None
