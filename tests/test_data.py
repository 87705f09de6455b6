"""The image pipeline: loading through TFDS, seeded shuffling, full evaluation coverage, augmentation."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnets.data import images, tfds_source


def split(n=50):
  rng = np.random.default_rng(0)
  return images.ImageSplit(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), np.arange(n, dtype=np.int32))


def epoch_labels(s, seed, epoch, batch_size=8):
  return [labels.tolist() for _, labels in images.train_batches(s, batch_size, seed, epoch)]


def test_train_order_depends_only_on_seed_and_epoch():
  s = split()
  assert epoch_labels(s, 0, 0) == epoch_labels(s, 0, 0)
  assert epoch_labels(s, 0, 0) != epoch_labels(s, 1, 0)
  assert epoch_labels(s, 0, 0) != epoch_labels(s, 0, 1)
  batches = epoch_labels(s, 0, 0)
  assert len(batches) == 50 // 8 and all(len(b) == 8 for b in batches)
  flat = sum(batches, [])
  assert len(set(flat)) == len(flat)  # no example twice within an epoch


def test_train_batches_pair_images_with_their_labels():
  s = split()
  for imgs, labels in images.train_batches(s, 8, 0, 0):
    np.testing.assert_array_equal(imgs, s.images_NHWC[labels])


def test_eval_covers_every_example_exactly_once():
  s = split(50)
  seen, total = [], 0
  for imgs, labels, mask in images.eval_batches(s, 16):
    assert imgs.shape[0] == labels.shape[0] == mask.shape[0] == 16
    seen += labels[mask].tolist()
    total += int(mask.sum())
  assert sorted(seen) == list(range(50)) and total == 50


def test_augment_crops_and_flips_deterministically_per_key():
  x = jnp.asarray(split(16).images_NHWC, jnp.float32)
  a = images.augment(jax.random.key(0), x)
  assert a.shape == x.shape
  np.testing.assert_array_equal(a, images.augment(jax.random.key(0), x))
  assert not np.array_equal(a, images.augment(jax.random.key(1), x))
  # With no crop, each image is either itself or its mirror.
  f = images.augment(jax.random.key(0), x, pad=0)
  for orig, out in zip(x, f):
    assert np.array_equal(out, orig) or np.array_equal(out, orig[:, ::-1])
  # A crop is a shifted window of the reflect-padded image.
  c = np.asarray(images.augment(jax.random.key(3), x, pad=2, flip=False))
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
  for p, out in zip(padded, c):
    assert any(np.array_equal(out, p[dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))


def test_alternating_flip_and_given_flips():
  indices = jnp.arange(64)
  even, odd = (np.asarray(images.alternating_flip(jax.random.key(0), indices, e)) for e in (0, 1))
  assert np.array_equal(even, ~odd) and 16 < even.sum() < 48  # each example's other orientation, next epoch
  np.testing.assert_array_equal(images.alternating_flip(jax.random.key(0), indices, 2), even)
  # A coin per example, not per batch position: the same examples in another order get the same flips.
  np.testing.assert_array_equal(images.alternating_flip(jax.random.key(0), indices[::-1], 0), even[::-1])
  assert not np.array_equal(images.alternating_flip(jax.random.key(1), indices, 0), even)
  x = jnp.asarray(split(8).images_NHWC, jnp.float32)
  flip_B = jnp.array([True, False] * 4)
  out = images.augment(jax.random.key(0), x, pad=0, flip_B=flip_B)
  for orig, o, f in zip(x, out, flip_B):
    np.testing.assert_array_equal(o, orig[:, ::-1] if f else orig)


def test_tta_views():
  x = jnp.asarray(split(2).images_NHWC, jnp.float32)
  assert [w for w, _ in images.tta_views(x, "none")] == [1.0]
  flip = images.tta_views(x, "flip")
  np.testing.assert_array_equal(flip[1][1], x[:, :, ::-1])
  views = images.tta_views(x, "flip_translate")
  assert len(views) == 6 and sum(w for w, _ in views) == 1.0
  # One pixel up-left and down-right (reflect padding): the interior is the shifted image.
  np.testing.assert_array_equal(views[2][1][:, 1:, 1:], x[:, :-1, :-1])
  np.testing.assert_array_equal(views[4][1][:, :-1, :-1], x[:, 1:, 1:])
  np.testing.assert_array_equal(views[5][1], views[4][1][:, :, ::-1])


def test_load_through_tfds(mock_tfds, tmp_path):
  for name, shape in [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1))]:
    data = images.load(name, str(tmp_path))
    assert data.train.images_NHWC.shape == (64, *shape) and data.train.images_NHWC.dtype == np.uint8
    assert data.read_test().labels_N.shape == (64,) and data.num_classes == 10
    assert data.mean_C.shape == (shape[-1],)


def test_missing_dataset_offline_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_source, "_online", lambda: False)
  with pytest.raises(tfds_source.DataError, match=r"mnist 3.0.1 is not prepared in .*no network"):
    images.load("mnist", str(tmp_path))


def test_unknown_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(tfds_source.DataError, match="no dataset named 'not_a_dataset'"):
    images.load("not_a_dataset", str(tmp_path))


def test_validation_is_held_out_from_train(mock_tfds, tmp_path, monkeypatch):
  """The image experiments ask TFDS for train[:90%] and train[90%:]: by TFDS's own slicing rules these are
  disjoint and together the whole train split, for any size. (Mock data ignores slicing, so the specs are checked
  with TFDS's resolution of them.)"""
  import types

  import tensorflow_datasets as tfds
  asked, real = [], tfds_source.open_source
  monkeypatch.setattr(tfds_source, "open_source", lambda name, d, splits, f: asked.append(splits) or real(name, d, splits, f))
  images.load("mnist", str(tmp_path), validation_percent=10)
  (train_spec, validation_spec), = asked
  for n in (7, 64, 50_000, 60_000):
    info = {"train": types.SimpleNamespace(num_examples=n)}
    (train,), (validation,) = (tfds.core.ReadInstruction.from_spec(s).to_absolute(info)
                               for s in (train_spec, validation_spec))
    train, validation = set(range(n)[train.from_:train.to]), set(range(n)[validation.from_:validation.to])
    assert not train & validation and train | validation == set(range(n))
    assert abs(len(validation) - n / 10) <= 1
  asked.clear()
  assert images.load("mnist", str(tmp_path), validation_percent=0).validation is None
  assert asked == [("train",)]

def test_missing_dataset_offline_names_data_dir_and_data_extra(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_source, "_online", lambda: False)
  with pytest.raises(tfds_source.DataError) as error:
    tfds_source.open_source("mnist", str(tmp_path), ("train",), images.FEATURES)
  message = str(error.value)
  assert "\n" not in message
  assert f"mnist 3.0.1 is not prepared in {tmp_path}" in message and "no network" in message
  assert "--config.data_dir=DIR or TFDS_DATA_DIR=DIR" in message
  assert 'pip install "fnets[data]"' in message and 'pip install -e ".[data]"' in message
  assert message.endswith(f"copy that data dir's mnist/ into {tmp_path}")


def test_missing_dataset_without_tensorflow_names_data_extra_before_downloading(tmp_path, monkeypatch):
  # TFDS's download_and_prepare fails without TensorFlow only after downloading ("Failed to encode example").
  monkeypatch.setattr(tfds_source, "_online", lambda: True)
  monkeypatch.setattr(tfds_source, "_tensorflow_installed", lambda: False)
  monkeypatch.setattr(tfds_source.tfds.core.DatasetBuilder, "download_and_prepare",
                      lambda *args, **kwargs: pytest.fail("download_and_prepare was called"))
  with pytest.raises(tfds_source.DataError) as error:
    tfds_source.open_source("mnist", str(tmp_path), ("train",), images.FEATURES)
  message = str(error.value)
  assert "\n" not in message
  assert f"mnist 3.0.1 is not prepared in {tmp_path}" in message and "needs TensorFlow, which is not installed" in message
  assert 'pip install "fnets[data]"' in message and 'pip install -e ".[data]"' in message
  assert "--config.data_dir=DIR or TFDS_DATA_DIR=DIR" in message



class _Source:
  """A stand-in TFDS data source that counts the examples it decodes."""

  def __init__(self, n, data_dir, split="train"):
    self.dataset_info = type("Info", (), {"name": "toy", "version": "1.0.0", "data_dir": str(data_dir)})()
    self.split, self.n, self.decoded = split, n, 0

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    self.decoded += 1
    return {"image": np.full((4, 4, 1), i % 256, np.uint8), "label": i % 3}


def test_decoded_splits_are_cached_for_the_next_start(tmp_path, monkeypatch):
  monkeypatch.setattr("fnets.CACHE_DIR", str(tmp_path / "cache"))
  first = _Source(10, tmp_path / "toy")
  a = images._read_split(first)
  assert first.decoded == 10 and len(list((tmp_path / "cache" / "decoded" / "toy" / "1.0.0").glob("*.npz"))) == 1
  again = _Source(10, tmp_path / "toy")
  b = images._read_split(again)
  assert again.decoded == 0  # read from the cache
  np.testing.assert_array_equal(a.images_NHWC, b.images_NHWC)
  np.testing.assert_array_equal(a.labels_N, b.labels_N)
  assert b.images_NHWC.dtype == np.uint8 and b.labels_N.dtype == np.int32
  # Another split, another data dir, or a dataset prepared again with other examples: decoded, not read.
  for source in (_Source(10, tmp_path / "toy", "test"), _Source(10, tmp_path / "other"), _Source(12, tmp_path / "toy")):
    assert len(images._read_split(source).labels_N) == source.n and source.decoded == source.n


def test_a_damaged_or_unwritable_cache_costs_only_the_decoding(tmp_path, monkeypatch):
  monkeypatch.setattr("fnets.CACHE_DIR", str(tmp_path / "cache"))
  images._read_split(_Source(10, tmp_path / "toy"))
  (cached,) = (tmp_path / "cache").rglob("*.npz")
  cached.write_bytes(b"not an npz")
  source = _Source(10, tmp_path / "toy")
  assert len(images._read_split(source).labels_N) == 10 and source.decoded == 10  # decoded again, cache rewritten
  assert len(images._read_split(_Source(10, tmp_path / "toy")).labels_N) == 10
  (tmp_path / "file").write_text("")
  monkeypatch.setattr("fnets.CACHE_DIR", str(tmp_path / "file"))  # a file, not a dir: nothing can be written
  assert len(images._read_split(_Source(10, tmp_path / "toy")).labels_N) == 10


def test_a_dataset_name_tfds_lacks_or_of_another_kind_is_named_with_the_fix(tmp_path):
  with pytest.raises(tfds_source.DataError) as error:
    tfds_source.open_source("cifar11", str(tmp_path), ("train",), images.FEATURES)
  assert "TFDS has no dataset named 'cifar11': did you mean 'cifar10_1' or 'cifar10' or 'cifar100'?" in str(error.value)
  assert str(error.value).count("\n") == 0 and len(str(error.value)) < 400  # not TFDS's whole catalogue
  with pytest.raises(tfds_source.DataError, match="tiny_shakespeare's examples have text, not image and label, "
                                                  "which this experiment needs"):
    tfds_source.open_source("tiny_shakespeare", str(tmp_path), ("train",), images.FEATURES)
  assert os.listdir(tmp_path) == []
