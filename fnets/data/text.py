"""Character-level text as integer ids: a TFDS text dataset (tiny_shakespeare) or any UTF-8 file of yours
(`text:PATH`); training windows read as contiguous streams (truncated BPTT), random windows for experiments on
pure functions, evaluation chunks in order."""

import codecs
import dataclasses
import os

import numpy as np

from fnets.data import tfds_source
from fnets.errors import DataError

UNKNOWN = "\ufffd"  # stands for every character the train split does not have (text:PATH datasets)


@dataclasses.dataclass(frozen=True)
class Vocab:
  chars: str  # id i is chars[i]; if it holds UNKNOWN, other characters outside it are encoded as UNKNOWN

  @classmethod
  def from_text(cls, text: str, unknown: bool = False) -> "Vocab":
    return cls("".join(sorted(set(text) | ({UNKNOWN} if unknown else set()))))

  def encode(self, text: str) -> np.ndarray:
    index = {ch: i for i, ch in enumerate(self.chars)}
    unknown = sorted(set(text) - set(index))
    if unknown and UNKNOWN not in index:
      raise ValueError(f"characters {unknown!r} are not in the vocabulary (built from the train split)")
    fallback = index.get(UNKNOWN, -1)
    return np.array([index.get(ch, fallback) for ch in text], np.int32)

  def decode(self, ids) -> str:
    return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))


# Byte-order marks, longest first (UTF-32-LE's begins with UTF-16-LE's).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode(raw: bytes, path: str) -> str:
  """The text of a file: UTF-8, or UTF-8/16/32 by its byte-order mark (as Windows' Notepad saves "Unicode")."""
  encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), "utf-8")
  try:
    return raw.decode(encoding)
  except UnicodeDecodeError as e:
    if encoding != "utf-8":
      fix = f"it starts with a {encoding.upper()} byte-order mark but is not {encoding.upper()} after it"
    elif b"\x00" in raw[:4096]:  # NUL bytes: UTF-16 or UTF-32 without a byte-order mark
      fix = f"it looks like UTF-16 (NUL bytes); convert it, e.g. iconv -f utf-16le -t utf-8 {path} > out.txt"
    else:
      fix = (f"if it is Latin-1 or Windows-1252, convert it, e.g. iconv -f cp1252 -t utf-8 {path} > out.txt "
             f"(file -i {path} guesses its encoding)")
    raise DataError(f"{path} is not {encoding.removesuffix('-sig').upper()}: byte 0x{raw[e.start]:02x} at byte "
                    f"offset {e.start} ({e.reason}); {fix}") from None


def read_text_file(path: str, fractions=(0.9, 0.05, 0.05)) -> dict[str, str]:
  """{"train", "validation", "test": text}: contiguous blocks of a UTF-8 file, by `fractions` of its characters."""
  try:
    with open(os.path.expanduser(path), "rb") as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f"--config.dataset=text:{path}: {e.strerror}; give the path of a UTF-8 text file") from None
  text = decode(raw, path)
  if not text.strip():
    raise DataError(f"{path} is {'empty' if not text else 'only white space'}; give a file with the text to learn")
  ends = np.cumsum(fractions) / np.sum(fractions) * len(text)
  train_end, validation_end = int(ends[0]), int(ends[1])
  return {"train": text[:train_end], "validation": text[train_end:validation_end], "test": text[validation_end:]}


def load_text(name: str, data_dir: str | None, splits=("train", "validation", "test"),
              fractions=(0.9, 0.05, 0.05)) -> dict[str, str]:
  """{split: the split's whole text}: of a TFDS dataset (tiny_shakespeare stores each split as one example), or of
  a file of yours, `text:PATH` (`read_text_file`)."""
  if name.startswith("text:"):
    return read_text_file(name.removeprefix("text:"), fractions)
  sources = tfds_source.open_source(name, data_dir, splits, ("text",))
  out = {}
  for split, source in sources.items():
    texts = [example["text"] for example in tfds_source.read_all(source)]
    out[split] = "".join(t.decode("utf-8") if isinstance(t, bytes) else t for t in texts)
  return out


def random_windows(ids: np.ndarray, batch_size: int, length: int, seed: int, step: int) -> np.ndarray:
  """A (batch_size, length) batch of windows at random offsets; depends only on (seed, step)."""
  if len(ids) <= length:
    raise ValueError(f"the text has {len(ids)} characters, fewer than a window of {length}")
  starts = np.random.default_rng([seed, step]).integers(0, len(ids) - length + 1, batch_size)
  return ids[starts[:, None] + np.arange(length)]


def stream_windows(ids: np.ndarray, batch_size: int, window: int, seed: int, step: int) -> tuple[np.ndarray, bool]:
  """Step `step`'s batch for truncated BPTT, as char-rnn trains: (tokens of shape (batch_size, window + 1), first).

  Each epoch cuts the text into `batch_size` contiguous streams, one per batch row, from an offset drawn from
  (seed, epoch); step k of the epoch gives every row the next `window` characters of its stream (plus the one
  after, the last target), so a state carried from one step to the next has read the row's text up to the window.
  `first` is True at an epoch's first step, where the streams start afresh and the carried state is reset.
  Depends only on (seed, step)."""
  steps_per_epoch = (len(ids) - 1 - window) // (batch_size * window)
  if steps_per_epoch < 1:
    raise ValueError(f"the text has {len(ids):,} characters, fewer than {batch_size} streams of a window of "
                     f"{window} and a spare window; use a smaller batch or window")
  epoch, k = divmod(step, steps_per_epoch)
  stream = steps_per_epoch * window
  offset = np.random.default_rng([seed, epoch]).integers(0, len(ids) - batch_size * stream)  # ≥ window choices
  starts = offset + stream * np.arange(batch_size) + k * window
  return ids[starts[:, None] + np.arange(window + 1)], k == 0


def stream_chunks(ids: np.ndarray, num_streams: int, length: int):
  """Splits the text into `num_streams` contiguous streams and yields (inputs, targets, mask), each
  (num_streams, length), in order. Every character but the first is a target exactly once; a model that
  carries its state from one chunk to the next sees each target's whole left context within its stream."""
  per_stream = -(-(len(ids) - 1) // num_streams)
  total = per_stream * num_streams
  inputs = np.zeros(total, np.int32)
  targets = np.zeros(total, np.int32)
  mask = np.zeros(total, np.float32)
  inputs[:len(ids) - 1], targets[:len(ids) - 1], mask[:len(ids) - 1] = ids[:-1], ids[1:], 1.0
  inputs, targets, mask = (a.reshape(num_streams, per_stream) for a in (inputs, targets, mask))
  for start in range(0, per_stream, length):
    chunk = slice(start, start + length)
    x, y, m = inputs[:, chunk], targets[:, chunk], mask[:, chunk]
    if (pad := length - x.shape[1]) > 0:
      x, y, m = (np.pad(a, ((0, 0), (0, pad))) for a in (x, y, m))
    yield x, y, m
