"""Image classification data: a TFDS dataset held in memory as uint8, batched on the host, augmented on device.

Small image sets (MNIST, CIFAR) fit in memory many times over, so each split is decoded once into a uint8
array; batching is then a NumPy gather, and normalisation and augmentation run inside the jitted train step.
"""

import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from fnets.data import tfds_source


@dataclasses.dataclass(frozen=True)
class ImageSplit:
  images_NHWC: np.ndarray  # uint8
  labels_N: np.ndarray  # int32


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  name: str
  train: ImageSplit
  test: ImageSplit
  num_classes: int
  mean_C: np.ndarray  # per-channel mean and std of the train split, in [0, 255] units
  std_C: np.ndarray


def _read_split(source) -> ImageSplit:
  examples = [source[i] for i in range(len(source))]
  images = np.stack([e["image"] for e in examples]).astype(np.uint8)
  labels = np.array([e["label"] for e in examples], np.int32)
  return ImageSplit(images, labels)


def load(name: str, data_dir: str | None = None) -> ImageDataset:
  """Reads the train and test splits of TFDS image dataset `name` (cifar10, mnist, fashion_mnist, ...)."""
  sources = tfds_source.open_source(name, data_dir, ("train", "test"))
  train, test = _read_split(sources["train"]), _read_split(sources["test"])
  num_classes = sources["train"].dataset_info.features["label"].num_classes
  pixels = train.images_NHWC.reshape(-1, train.images_NHWC.shape[-1]).astype(np.float64)
  return ImageDataset(name, train, test, num_classes, pixels.mean(0).astype(np.float32),
                      np.maximum(pixels.std(0), 1.0).astype(np.float32))


def train_batches(split: ImageSplit, batch_size: int, seed: int, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of shuffled full batches; the order depends only on (seed, epoch). The remainder is dropped."""
  if batch_size > len(split.labels_N):
    raise ValueError(f"batch_size {batch_size} is larger than the {len(split.labels_N)} training examples")
  order = np.random.default_rng([seed, epoch]).permutation(len(split.labels_N))
  for start in range(0, len(order) - batch_size + 1, batch_size):
    idx = order[start:start + batch_size]
    yield split.images_NHWC[idx], split.labels_N[idx]


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


def augment(key: jax.Array, images_BHWC: jax.Array, pad: int = 4, flip: bool = True) -> jax.Array:
  """Random crop from the image reflect-padded by `pad` pixels, and a random horizontal flip, per example."""
  B, H, W, _ = images_BHWC.shape
  crop_key, flip_key = jax.random.split(key)
  if pad:
    padded = jnp.pad(images_BHWC, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    offsets_Bx2 = jax.random.randint(crop_key, (B, 2), 0, 2 * pad + 1)
    crop = lambda image, dy, dx: jax.lax.dynamic_slice(image, (dy, dx, 0), (H, W, image.shape[-1]))
    images_BHWC = jax.vmap(crop)(padded, offsets_Bx2[:, 0], offsets_Bx2[:, 1])
  if flip:
    flip_B = jax.random.bernoulli(flip_key, 0.5, (B,))
    images_BHWC = jnp.where(flip_B[:, None, None, None], images_BHWC[:, :, ::-1], images_BHWC)
  return images_BHWC
