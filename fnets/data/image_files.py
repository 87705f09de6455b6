"""Images of your own, without TFDS: a folder of image files (`folder:PATH`) or arrays in a .npz (`npz:PATH`).

    folder:PATH   PATH/<class>/*.{png,jpg,jpeg,bmp}, or PATH/train/<class>/... with an optional PATH/test/<class>/...
    npz:PATH      x_train (N, H, W[, C]) and y_train (N,), optionally x_test and y_test; pixels in 0..255

Classes are the folder names, sorted (class k is the k-th); a folder of images is decoded once, by every core, and
kept in fnets' cache (keyed by the files' names, sizes and times and the image size), so a second start decodes
nothing. This module needs no JAX: the decoding workers import only NumPy and Pillow.
"""

import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import fnets
from fnets.errors import DataError
from fnets.files import write_atomic

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_CHUNK = 500  # images per task of a decoding worker


def _class_dirs(root: str) -> list[str]:
  return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def _list_split(root: str, where: str, classes: list[str] | None = None) -> tuple[list[str], np.ndarray, list[str]]:
  """(paths, labels, classes) of PATH/<class>/*: one DataError for an empty folder, a single class or a class
  without images."""
  found = _class_dirs(root)
  if classes is not None and (extra := sorted(set(found) - set(classes))):
    raise DataError(f"{root} has classes that {where.replace('test', 'train')} lacks ({', '.join(extra[:5])}): "
                    f"give the test split only classes the training images have")
  classes = classes if classes is not None else found
  if len(classes) < 2:
    raise DataError(f"{root} holds {len(classes)} class folder{'s' if len(classes) != 1 else ''} "
                    f"({', '.join(classes) or 'none'}); a classifier needs at least 2: put each class's images in "
                    f"{root}/<class>/")
  paths, labels = [], []
  for label, name in enumerate(classes):
    directory = os.path.join(root, name)
    files = sorted(f for f in os.listdir(directory) if f.lower().endswith(EXTENSIONS)) \
        if os.path.isdir(directory) else []
    if not files and where == "train":
      raise DataError(f"class folder {directory} holds no images ({', '.join(EXTENSIONS)}); add some or remove it")
    paths += [os.path.join(directory, f) for f in files]
    labels += [label] * len(files)
  return paths, np.asarray(labels, np.int32), classes


def _decode_one(path: str, image_size: int) -> np.ndarray | tuple[str, str]:
  """uint8 (H, W, C) of one image (grey images keep one channel, others become RGB), or (path, why)."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as image:
      mode = "L" if image.mode in ("1", "L", "I;16", "I") else "RGB"
      image = image if image.mode == mode else image.convert(mode)
      if image_size:
        image = image.resize((image_size, image_size), Image.BILINEAR)
      array = np.asarray(image, np.uint8)
  except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
    return path, f"cannot be read as an image ({type(e).__name__}: {e})"
  return array[..., None] if array.ndim == 2 else array


def _decode(paths: list[str], image_size: int, first: str, shape: tuple) -> np.ndarray | tuple[str, str]:
  """uint8 (N, H, W, C) of `paths`, or (path, why) for the first image that cannot be read or whose shape is not
  `shape` (that of the image `first`)."""
  out = np.empty((len(paths), *shape), np.uint8)
  for row, path in enumerate(paths):
    array = _decode_one(path, image_size)
    if isinstance(array, tuple):
      return array
    if array.shape != shape:
      return path, f"is {array.shape[1]}×{array.shape[0]} where {first} is {shape[1]}×{shape[0]}"
    out[row] = array
  return out


def decode_all(paths: list[str], image_size: int = 0, workers: int | None = None) -> np.ndarray:
  """The images of `paths`, in order, decoded by `workers` processes (default: every core)."""
  first = _decode_one(paths[0], image_size)
  if isinstance(first, tuple):
    raise DataError(f"image {first[0]} {first[1]}: replace or remove it")
  chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
  decode = lambda chunk: _decode(chunk, image_size, paths[0], first.shape)
  workers = min(workers or os.cpu_count() or 1, len(chunks))
  if workers == 1:
    parts = [decode(chunk) for chunk in chunks]
  else:
    # workers - 1 processes take chunks from the front while this process decodes from the back: it starts at
    # once, while they start (spawned, not forked: the parent may already run JAX's threads).
    with ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
      futures = [pool.submit(_decode, chunk, image_size, paths[0], first.shape) for chunk in chunks]
      parts = [None] * len(chunks)
      for k in reversed(range(len(chunks))):
        if not futures[k].cancel():
          break
        parts[k] = decode(chunks[k])
      parts = [part if future.cancelled() else future.result() for part, future in zip(parts, futures)]
  if error := next((part for part in parts if isinstance(part, tuple)), None):
    path, why = error
    fix = ("resize it or set --config.image_size=N to resize every image to N×N" if " where " in why
           else "replace or remove it")
    raise DataError(f"image {path} {why}: {fix}")
  return np.concatenate(parts)


def _cache_path(root: str, paths: list[str], image_size: int) -> str:
  """Keyed by every file's name, size and modification time, and the size images are resized to."""
  digest = hashlib.sha256(f"{os.path.realpath(root)}|{image_size}\n".encode())
  for path in paths:
    stat = os.stat(path)
    digest.update(f"{os.path.relpath(path, root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
  return os.path.join(fnets.CACHE_DIR, "decoded", "folder", f"{digest.hexdigest()[:24]}.npy")


def _decoded(root: str, paths: list[str], image_size: int) -> np.ndarray:
  path = _cache_path(root, paths, image_size)
  try:
    return np.load(path)
  except (OSError, ValueError):
    pass
  images = decode_all(paths, image_size)
  try:  # written whole or not at all: a failed decode or a crash leaves no cache entry behind
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, lambda f: np.save(f, images))
  except OSError:
    pass  # a read-only cache costs the decoding time, nothing else
  return images


def read_folder(root: str, image_size: int = 0) -> dict:
  """{"train": (images, labels), "test": (images, labels) or None, "classes": [names]} of `folder:root`."""
  if not os.path.isdir(root):
    raise DataError(f"--config.dataset=folder:{root}: no such directory; give a folder of class folders "
                    f"(PATH/<class>/*.png) or of train/ and test/")
  split_root = os.path.join(root, "train") if os.path.isdir(os.path.join(root, "train")) else root
  paths, labels, classes = _list_split(split_root, "train")
  out = {"train": (_decoded(root, paths, image_size), labels), "test": None, "classes": classes}
  if split_root != root and os.path.isdir(test_root := os.path.join(root, "test")):
    test_paths, test_labels, _ = _list_split(test_root, "test", classes)
    if test_paths:
      out["test"] = (_decoded(root, test_paths, image_size), test_labels)
      if out["test"][0].shape[1:] != out["train"][0].shape[1:]:
        raise DataError(f"the test images of {root} are {out['test'][0].shape[1:3]}, the training images "
                        f"{out['train'][0].shape[1:3]}: set --config.image_size=N to resize every image to N×N")
  return out


def _pixels(x: np.ndarray, name: str, path: str) -> np.ndarray:
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise DataError(f"{path}: {name} has shape {x.shape}; give images as (N, H, W) or (N, H, W, C)")
  if x.dtype != np.uint8:
    if not np.issubdtype(x.dtype, np.number) or x.size and (x.min() < 0 or x.max() > 255
                                                            or not np.all(np.mod(x, 1) == 0)):
      raise DataError(f"{path}: {name} holds {x.dtype} values outside the integers 0..255; store pixels as uint8")
    x = x.astype(np.uint8)
  return x


def _labels(y: np.ndarray, name: str, path: str, n: int, num_classes: int | None) -> np.ndarray:
  if y.ndim != 1 or len(y) != n:
    raise DataError(f"{path}: {name} has shape {y.shape} for {n} images; give one integer label per image")
  if not np.issubdtype(y.dtype, np.integer):
    raise DataError(f"{path}: {name} holds {y.dtype}; labels are integers 0..K-1")
  if len(y) and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
    bad = int(y[(y < 0) | (y >= (num_classes or 2**31))][0])
    raise DataError(f"{path}: {name} holds the label {bad}, outside 0..{(num_classes or 1) - 1}; labels are the "
                    f"classes' indices 0..K-1, K = the number of classes in y_train")
  return y.astype(np.int32)


def read_npz(path: str) -> dict:
  """Like `read_folder`, from x_train, y_train[, x_test, y_test]; the classes are 0..max(y_train)."""
  try:
    arrays = np.load(path)
  except FileNotFoundError:
    raise DataError(f"--config.dataset=npz:{path}: no such file; give a .npz with x_train and y_train") from None
  except (OSError, ValueError) as e:
    raise DataError(f"{path} cannot be read as a .npz ({e}); write it with numpy.savez(path, x_train=..., "
                    f"y_train=...)") from None
  with arrays:
    keys = set(arrays.files)
    if missing := [k for k in ("x_train", "y_train") if k not in keys]:
      raise DataError(f"{path} has no {' or '.join(missing)} (it has: {', '.join(sorted(keys)) or 'nothing'}); "
                      f"give x_train (N, H, W[, C]) and y_train (N,), optionally x_test and y_test")
    if ("x_test" in keys) != ("y_test" in keys):
      raise DataError(f"{path} has {'x_test' if 'x_test' in keys else 'y_test'} without its pair; give both or "
                      f"neither")
    x = _pixels(arrays["x_train"], "x_train", path)
    y = _labels(arrays["y_train"], "y_train", path, len(x), None)
    num_classes = int(y.max()) + 1 if len(y) else 0
    if num_classes < 2:
      raise DataError(f"{path}: y_train holds {num_classes} class{'es' if num_classes != 1 else ''}; a classifier "
                      f"needs at least 2")
    out = {"train": (x, y), "test": None, "classes": [str(k) for k in range(num_classes)]}
    if "x_test" in keys:
      x_test = _pixels(arrays["x_test"], "x_test", path)
      if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: x_test's images are {x_test.shape[1:]}, x_train's {x.shape[1:]}; give both the "
                        f"same shape")
      out["test"] = (x_test, _labels(arrays["y_test"], "y_test", path, len(x_test), num_classes))
  return out
