"""Character data: vocabulary, random training windows, and full-coverage evaluation streams."""

import numpy as np
import pytest

from fnets.data import text


def test_vocab_round_trip():
  vocab = text.Vocab.from_text("hello world")
  assert vocab.chars == " dehlorw"
  assert vocab.decode(vocab.encode("world hello")) == "world hello"
  with pytest.raises(ValueError, match=r"characters \['z'\] are not in the vocabulary"):
    vocab.encode("zero")


def test_random_windows_depend_only_on_seed_and_step():
  ids = np.arange(1000)
  a = text.random_windows(ids, 8, 17, seed=0, step=5)
  assert a.shape == (8, 17)
  assert np.all(np.diff(a, axis=1) == 1)  # contiguous windows of the text
  np.testing.assert_array_equal(a, text.random_windows(ids, 8, 17, seed=0, step=5))
  assert not np.array_equal(a, text.random_windows(ids, 8, 17, seed=0, step=6))
  assert not np.array_equal(a, text.random_windows(ids, 8, 17, seed=1, step=5))


@pytest.mark.parametrize("n, streams, length", [(101, 4, 7), (50, 1, 49), (37, 5, 3)])
def test_stream_chunks_predict_every_character_once(n, streams, length):
  ids = np.arange(n) + 100
  targets, previous = [], {}
  for x, y, m in text.stream_chunks(ids, streams, length):
    assert x.shape == y.shape == m.shape == (streams, length)
    for s in range(streams):
      for t in range(length):
        if m[s, t]:
          assert y[s, t] == x[s, t] + 1  # the target is the next character
          if s in previous:
            assert x[s, t] == previous[s] + 1  # each stream continues where its last chunk stopped
          previous[s] = x[s, t]
          targets.append(int(y[s, t]))
  assert sorted(targets) == list(ids[1:])


def test_stream_windows_carry_each_row_through_its_own_stream():
  ids = np.arange(1000)
  per_epoch = (1000 - 1 - 10) // (4 * 10)  # 24 steps of 4 rows × 10 characters
  batches = [text.stream_windows(ids, 4, 10, seed=0, step=k) for k in range(2 * per_epoch + 1)]
  assert [first for _, first in batches] == [k % per_epoch == 0 for k in range(2 * per_epoch + 1)]
  for k, (tokens, first) in enumerate(batches):
    assert tokens.shape == (4, 11) and np.all(np.diff(tokens, axis=1) == 1) and tokens.max() < 1000
    if not first:  # each row goes on where it stopped: its last target is the next window's first input
      np.testing.assert_array_equal(tokens[:, 0], batches[k - 1][0][:, -1])
  epoch = np.concatenate([t[:, :-1] for t, _ in batches[:per_epoch]], axis=1)
  assert len(np.unique(epoch)) == epoch.size  # the rows' streams do not overlap
  assert batches[0][0][0, 0] != batches[per_epoch][0][0, 0]  # a new epoch, new offsets
  np.testing.assert_array_equal(batches[5][0], text.stream_windows(ids, 4, 10, seed=0, step=5)[0])
  assert not np.array_equal(batches[5][0], text.stream_windows(ids, 4, 10, seed=1, step=5)[0])
  with pytest.raises(ValueError, match="fewer than 100 streams of a window of 10"):
    text.stream_windows(ids, 100, 10, seed=0, step=0)
