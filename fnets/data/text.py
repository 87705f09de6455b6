"""Character-level text: a TFDS text dataset (tiny_shakespeare) as integer ids; training windows read as contiguous
streams (truncated BPTT), random windows for experiments on pure functions, evaluation chunks in order."""

import dataclasses

import numpy as np

from fnets.data import tfds_source


@dataclasses.dataclass(frozen=True)
class Vocab:
  chars: str  # id i is chars[i]

  @classmethod
  def from_text(cls, text: str) -> "Vocab":
    return cls("".join(sorted(set(text))))

  def encode(self, text: str) -> np.ndarray:
    index = {ch: i for i, ch in enumerate(self.chars)}
    unknown = sorted(set(text) - set(index))
    if unknown:
      raise ValueError(f"characters {unknown!r} are not in the vocabulary (built from the train split)")
    return np.array([index[ch] for ch in text], np.int32)

  def decode(self, ids) -> str:
    return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1))


def load_text(name: str, data_dir: str | None, splits=("train", "validation", "test")) -> dict[str, str]:
  """{split: the split's whole text}; tiny_shakespeare stores each split as one example."""
  sources = tfds_source.open_source(name, data_dir, splits)
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
