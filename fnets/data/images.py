"""Image classification data held in memory as uint8, batched on the host, augmented on device: a TFDS dataset
(`cifar10`, `mnist`, ...), a folder of images (`folder:PATH`) or arrays (`npz:PATH`) of your own
(fnets/data/image_files.py).

Small image sets (MNIST, CIFAR) fit in memory many times over, so each split is decoded once into a uint8
array; batching is then a NumPy gather, and normalisation and augmentation run inside the jitted train step.
"""

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

import fnets
from fnets import config as config_lib
from fnets.data import image_files, tfds_source
from fnets.errors import DataError
from fnets.files import write_atomic

TTA = ("none", "flip", "flip_translate")
FEATURES = ("image", "label")  # what a TFDS dataset must have for image classification

def check(config) -> None:
  """The fields the image pipeline reads: augmentation, test-time augmentation, the held-out split."""
  config_lib.one_of(config, "tta", TTA)
  config_lib.require(config, "bool", "augment", "flip", "alternating_flip")
  config_lib.require(config, "int>=0", "crop_padding")
  if config.get("alternating_flip") and not (config.augment and config.flip):
    config_lib.fail(config, "alternating_flip", "flips the training images: it needs --config.augment=true and "
                    "--config.flip=true")
  if not (isinstance(config.validation_percent, int) and 0 <= config.validation_percent < 100):
    config_lib.fail(config, "validation_percent", "must be an integer in [0, 100): the percent of the train split "
                    "held out for validation")
  config_lib.require(config, "int>=0", "image_size")
  if config.get("image_size") and not config.dataset.startswith("folder:"):
    config_lib.fail(config, "image_size", "resizes the images of a folder: dataset only; set it to 0")


class _WithoutOpenCVAdvice(logging.Filter):
  """TFDS advises installing OpenCV the first time it decodes an image with PIL; fnets decodes once and caches."""

  def filter(self, record):
    return "OpenCV is not installed" not in record.getMessage()


@contextlib.contextmanager
def _quiet_tfds():
  absl_logger, quiet = logging.getLogger("absl"), _WithoutOpenCVAdvice()
  absl_logger.addFilter(quiet)
  try:
    yield
  finally:
    absl_logger.removeFilter(quiet)


@dataclasses.dataclass(frozen=True)
class ImageSplit:
  images_NHWC: np.ndarray  # uint8
  labels_N: np.ndarray  # int32


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  name: str
  data_dir: str | None
  train: ImageSplit
  validation: ImageSplit | None  # held out from TFDS's train split; None when validation_percent is 0
  num_classes: int
  mean_C: np.ndarray  # per-channel mean and std of the train part, in [0, 255] units
  std_C: np.ndarray
  test: ImageSplit | None = None  # in-memory data only; a TFDS dataset reads its test split when asked
  classes: tuple[str, ...] = ()  # the class names, where the data has them (a folder's)

  def read_test(self) -> ImageSplit | None:
    """The test split, or None for data of your own without one; from TFDS, read only for a run's final record
    and --mode=eval."""
    if self.test is not None or ":" in self.name:
      return self.test
    return _read_split(tfds_source.open_source(self.name, self.data_dir, ("test",), FEATURES)["test"])


def _read_split(source) -> ImageSplit:
  """All examples of a TFDS split, decoded. Decoding (PIL) takes ~30 s for CIFAR-10's 50,000 images, so the
  arrays are kept in fnets' cache dir, keyed by the dataset's directory (name and version) and the split, and
  read from there by later starts."""
  info = source.dataset_info
  key = hashlib.sha256(f"{os.path.realpath(info.data_dir)}|{source.split}".encode()).hexdigest()[:16]
  path = os.path.join(fnets.CACHE_DIR, "decoded", info.name, str(info.version), f"{key}.npz")
  try:
    with np.load(path) as cached:
      if len(cached["labels_N"]) == len(source):  # (else the dataset was prepared again: decode it again)
        return ImageSplit(cached["images_NHWC"], cached["labels_N"])
  except (OSError, ValueError, KeyError):  # not cached yet, or damaged
    pass
  with _quiet_tfds():
    examples = tfds_source.read_all(source)
  split = ImageSplit(np.stack([e["image"] for e in examples]).astype(np.uint8),
                     np.array([e["label"] for e in examples], np.int32))
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, lambda f: np.savez(f, images_NHWC=split.images_NHWC, labels_N=split.labels_N))
  except OSError as e:  # a read-only or full cache dir costs the decoding time, nothing else
    logging.getLogger("fnets").warning("could not cache the decoded %s in %s: %s", source.split, path, e)
  return split


def load(name: str, data_dir: str | None = None, validation_percent: int = 10, image_size: int = 0) -> ImageDataset:
  """The train split of image dataset `name`, of which the last `validation_percent` percent (TFDS slicing:
  train[:90%] and train[90%:], the same examples for every seed) is held out for validation. `name` is a TFDS
  dataset (cifar10, mnist, ...), whose test split is not read here, or `folder:PATH` or `npz:PATH`
  (image_files), held out after one fixed shuffle (their files come ordered by class)."""
  kind, _, path = name.partition(":")
  if kind in ("folder", "npz"):
    return _own(name, kind, os.path.expanduser(path), validation_percent, image_size)
  if ":" in name:
    raise DataError(f"--config.dataset={name}: unknown kind {kind!r}; give a TFDS name, folder:PATH or npz:PATH")
  p = validation_percent
  splits = {"train": f"train[:{100 - p}%]", "validation": f"train[{100 - p}%:]"} if p else {"train": "train"}
  sources = tfds_source.open_source(name, data_dir, tuple(splits.values()), FEATURES)
  train = _read_split(sources[splits["train"]])
  validation = _read_split(sources[splits["validation"]]) if p else None
  num_classes = sources[splits["train"]].dataset_info.features["label"].num_classes
  return in_memory(name, train, validation, num_classes, data_dir=data_dir)


def _own(name: str, kind: str, path: str, validation_percent: int, image_size: int) -> ImageDataset:
  own = image_files.read_folder(path, image_size) if kind == "folder" else image_files.read_npz(path)
  images, labels = own["train"]
  order = np.random.default_rng(0).permutation(len(labels))  # fixed: the same held-out examples for every seed
  held_out = round(len(labels) * validation_percent / 100)
  train, validation = order[:len(labels) - held_out], order[len(labels) - held_out:]
  split = lambda idx: ImageSplit(images[np.sort(idx)], labels[np.sort(idx)])
  test = ImageSplit(*own["test"]) if own["test"] is not None else None
  return in_memory(name, split(train), split(validation) if held_out else None, len(own["classes"]), test=test,
                   classes=tuple(own["classes"]))


def in_memory(name: str, train: ImageSplit, validation: ImageSplit | None, num_classes: int,
              test: ImageSplit | None = None, data_dir: str | None = None, classes: tuple = ()) -> ImageDataset:
  """A dataset of arrays, with the per-channel statistics of `train` (benchmarks and tests build theirs so)."""
  mean_C, std_C = channel_stats(train.images_NHWC)
  return ImageDataset(name, data_dir, train, validation, num_classes, mean_C, std_C, test, tuple(classes))


def channel_stats(images_NHWC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation (at least 1) of uint8 images, from each channel's histogram of pixel
  values: exact integer sums and no float64 copy of the whole set (0.2 s for 50,000 32×32 RGB images, against
  several seconds for the mean and std of a float64 copy)."""
  pixels = images_NHWC.reshape(-1, images_NHWC.shape[-1])
  counts = np.zeros((pixels.shape[1], 256), np.int64)
  for start in range(0, len(pixels), 1 << 18):  # (blocks: bincount's int64 copy of them stays small)
    block = pixels[start:start + (1 << 18)]
    for c in range(pixels.shape[1]):
      counts[c] += np.bincount(block[:, c], minlength=256)
  counts = counts.astype(np.float64)
  values = np.arange(256, dtype=np.float64)
  n = len(pixels)
  mean = counts @ values / n
  std = np.sqrt(np.maximum(counts @ values**2 / n - mean**2, 0.0))
  return mean.astype(np.float32), np.maximum(std, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def train_batch(split: ImageSplit, batch_size: int, seed: int, step: int) -> tuple[np.ndarray, ...]:
  """Batch `step` of shuffled full batches: (images, labels, the examples' indices in the split), epoch after
  epoch, each in an order that depends only on (seed, epoch); an epoch's remainder is dropped."""
  n = len(split.labels_N)
  epoch, index = divmod(step, n // batch_size)
  idx = _epoch_order(n, seed, epoch)[index * batch_size:(index + 1) * batch_size]
  return split.images_NHWC[idx], split.labels_N[idx], idx.astype(np.int32)


def train_batches(split: ImageSplit, batch_size: int, seed: int, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """The (images, labels) batches of one epoch, as `train_batch` gives them."""
  per_epoch = len(split.labels_N) // batch_size
  for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
    yield train_batch(split, batch_size, seed, step)[:2]


def eval_batches(split: ImageSplit, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Every example exactly once, in order; the last batch is zero-padded to `batch_size` and masked."""
  n = len(split.labels_N)
  for start in range(0, n, batch_size):
    images, labels = split.images_NHWC[start:start + batch_size], split.labels_N[start:start + batch_size]
    mask = np.ones(len(labels), bool)
    if (pad := batch_size - len(labels)) > 0:
      images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
      labels, mask = np.pad(labels, (0, pad)), np.pad(mask, (0, pad))
    yield images, labels, mask


def normalize(images_BHWC: jax.Array, mean_C, std_C) -> jax.Array:
  """uint8 images to float32, standardised per channel."""
  return (images_BHWC.astype(jnp.float32) - jnp.asarray(mean_C)) / jnp.asarray(std_C)


def augment(key: jax.Array, images_BHWC: jax.Array, pad: int = 4, flip: bool = True,
            flip_B: jax.Array | None = None) -> jax.Array:
  """Random crop from the image reflect-padded by `pad` pixels (a translation by up to ±pad pixels), and a
  horizontal flip: of the images where `flip_B` is true (e.g. `alternating_flip`'s), else of each at random."""
  B, H, W, _ = images_BHWC.shape
  crop_key, flip_key = jax.random.split(key)
  if pad:
    padded = jnp.pad(images_BHWC, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    offsets_Bx2 = jax.random.randint(crop_key, (B, 2), 0, 2 * pad + 1)
    crop = lambda image, dy, dx: jax.lax.dynamic_slice(image, (dy, dx, 0), (H, W, image.shape[-1]))
    images_BHWC = jax.vmap(crop)(padded, offsets_Bx2[:, 0], offsets_Bx2[:, 1])
  if flip:
    if flip_B is None:
      flip_B = jax.random.bernoulli(flip_key, 0.5, (B,))
    images_BHWC = jnp.where(flip_B[:, None, None, None], images_BHWC[:, :, ::-1], images_BHWC)
  return images_BHWC


def alternating_flip(key: jax.Array, indices_B: jax.Array, epoch: jax.Array) -> jax.Array:
  """airbench's alternating flip: example i is mirrored at random (a coin of (key, i)) in even epochs and the
  other way in odd ones, so that every two epochs see both of its orientations (random flips repeat one with
  probability 1/2)."""
  coin_B = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(indices_B)
  return coin_B ^ (epoch % 2 == 1)


def tta_views(x_BHWC: jax.Array, mode: str) -> list[tuple[float, jax.Array]]:
  """(weight, view) pairs whose weighted sum of logits is the test-time-augmented prediction (weights sum to 1):
  "flip" averages the image and its mirror; "flip_translate" (airbench's level 2) gives that average weight 1/2
  and the two one-pixel diagonal translations (reflect-padded), each with its mirror, 1/8 each."""
  if mode == "none":
    return [(1.0, x_BHWC)]
  mirror = lambda x: [(0.5, x), (0.5, x[:, :, ::-1])]
  views = mirror(x_BHWC)
  if mode == "flip_translate":
    _, H, W, _ = x_BHWC.shape
    padded = jnp.pad(x_BHWC, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    shifted = [padded[:, :H, :W], padded[:, 2:H + 2, 2:W + 2]]
    views = [(w / 2, v) for w, v in views] + [(w / 4, v) for s in shifted for w, v in mirror(s)]
  return views
