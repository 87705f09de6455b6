"""Images of your own, without TFDS: a folder of image files (`folder:PATH`) or arrays in a .npz (`npz:PATH`).

    folder:PATH   PATH/<class>/*.{png,jpg,jpeg,bmp}, or PATH/train/<class>/... with an optional PATH/test/<class>/...
    npz:PATH      x_train (N, H, W[, C]) and y_train (N,), optionally x_test and y_test; pixels in 0..255

Classes are the folder names, sorted (class k is the k-th); a folder of images is decoded once, by every core, and
kept in fnets' cache (keyed by the files' names, sizes and times and the image size), so a second start decodes
nothing. This module needs no JAX: the decoding workers import only NumPy and Pillow.

A folder's images become one mode: RGB if any of them has colour, else grey (one channel). Transparent pixels
are composited onto white; 16-bit images are scaled to 8 bits; a photo's EXIF orientation is applied.
"""

import hashlib
import multiprocessing
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import fnets
from fnets.errors import DataError
from fnets.files import write_atomic

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_CHUNK = 500  # images per task of a decoding worker


def _visible(name: str) -> bool:  # hidden files and macOS's AppleDouble companions (._NAME) are not data
  return not name.startswith(".")


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
    files = sorted(f for f in os.listdir(directory) if f.lower().endswith(EXTENSIONS) and _visible(f)) \
        if os.path.isdir(directory) else []
    if not files and where == "train":
      raise DataError(f"class folder {directory} holds no images ({', '.join(EXTENSIONS)}); add some or remove it")
    paths += [os.path.join(directory, f) for f in files]
    labels += [label] * len(files)
  return paths, np.asarray(labels, np.int32), classes


def _to_8_bits(image):
  """16- and 32-bit grey images (modes I;16*, I) scaled to 0..255, as 8-bit viewers show them; others as they are."""
  from PIL import Image
  if not image.mode.startswith("I"):
    return image
  a = np.asarray(image).astype(np.int64).clip(0, 65535)
  return Image.fromarray(((a + 128) // 257).astype(np.uint8), "L")


def _decode_one(path: str, image_size: int) -> tuple[np.ndarray, bool] | tuple[str, str]:
  """uint8 (H, W, 3) of one image, and whether it has colour (grey images repeat their one channel), or
  (path, why)."""
  from PIL import Image, ImageOps, UnidentifiedImageError
  try:
    with Image.open(path) as image:
      image = _to_8_bits(ImageOps.exif_transpose(image))
      if image.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))  # transparent pixels onto white
      grey = image.mode in ("1", "L")
      image = image.convert("L" if grey else "RGB")
      if image_size:
        image = image.resize((image_size, image_size), Image.BILINEAR)
      array = np.asarray(image, np.uint8)
  except Image.DecompressionBombError as e:
    return path, f"is too large to decode safely ({e})"
  except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
    return path, f"cannot be read as an image ({type(e).__name__}: {e})"
  if grey:
    return np.repeat(array[..., None], 3, axis=-1), False
  return array, bool((array[..., 0] != array[..., 1]).any() or (array[..., 1] != array[..., 2]).any())


def _decode(paths: list[str], image_size: int, first: str, shape: tuple) -> tuple | tuple[str, str]:
  """(uint8 (N, H, W, 3) of `paths`, whether any has colour), or (path, why) for the first image that cannot be
  read or whose size is not that of the image `first` (`shape`)."""
  out, colour = np.empty((len(paths), *shape), np.uint8), False
  for row, path in enumerate(paths):
    decoded = _decode_one(path, image_size)
    if isinstance(decoded[0], str):
      return decoded
    array, has_colour = decoded
    if array.shape != shape:
      return path, f"is {array.shape[1]}×{array.shape[0]} pixels where {first} is {shape[1]}×{shape[0]}"
    out[row], colour = array, colour or has_colour
  return out, colour


def decode_all(paths: list[str], image_size: int = 0, workers: int | None = None) -> np.ndarray:
  """The images of `paths`, in order, decoded by `workers` processes (default: every core)."""
  first = _decode_one(paths[0], image_size)
  if isinstance(first[0], str):
    raise DataError(f"image {first[0]} {first[1]}: replace or remove it")
  first = first[0]
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
  if error := next((part for part in parts if isinstance(part[0], str)), None):
    path, why = error
    fix = ("resize it or set --config.image_size=N to resize every image to N×N" if " where " in why
           else "replace or remove it")
    raise DataError(f"image {path} {why}: {fix}")
  images = np.concatenate([part[0] for part in parts])
  return images if any(part[1] for part in parts) else images[..., :1]  # no colour anywhere: grey


def _cache_path(root: str, paths: list[str], image_size: int) -> str:
  """Keyed by every file's name, size and modification time, and the size images are resized to."""
  digest = hashlib.sha256(f"{os.path.realpath(root)}|{image_size}\n".encode())
  for path in paths:
    try:
      stat = os.stat(path)
    except OSError as e:  # a broken link, a loop of links, a file gone since the listing
      raise DataError(f"image {path} cannot be read ({e.strerror}): replace or remove it") from None
    digest.update(f"{os.path.relpath(path, root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
  return os.path.join(fnets.CACHE_DIR, "decoded", "folder", f"{digest.hexdigest()[:24]}.npy")


def _decoded(root: str, paths: list[str], image_size: int) -> np.ndarray:
  path = _cache_path(root, paths, image_size)
  try:
    return np.load(path)
  except (OSError, ValueError, EOFError):  # none yet, or a damaged one: decode again (and replace it)
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
  if len(y) and y.min() < 0:
    raise DataError(f"{path}: {name} holds the label {int(y.min())}; labels are the classes' indices 0..K-1, "
                    f"never negative: map each class to one of them")
  if len(y) and num_classes is not None and y.max() >= num_classes:
    raise DataError(f"{path}: {name} holds the label {int(y.max())}, outside 0..{num_classes - 1}; labels are the "
                    f"classes' indices 0..K-1, K = the number of classes in y_train")
  return y.astype(np.int32)


def _npz_arrays(path: str):
  """np.load of a .npz, never unpickling, with each way a file can fail to be one as a DataError."""
  fix = "write it with numpy.savez(path, x_train=..., y_train=...)"
  try:
    with open(path, "rb") as f:
      head = f.read(4)
  except FileNotFoundError:
    raise DataError(f"--config.dataset=npz:{path}: no such file; give a .npz with x_train and y_train") from None
  except OSError as e:
    raise DataError(f"--config.dataset=npz:{path} cannot be read ({e.strerror}); give a .npz with x_train and "
                    f"y_train") from None
  if head != b"PK\x03\x04":  # every .npz is a zip archive
    raise DataError(f"{path} is not a .npz file (it starts with {head!r}, not a zip archive's PK): {fix}")
  try:
    return np.load(path, allow_pickle=False)
  except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
    raise DataError(f"{path} is a damaged .npz ({type(e).__name__}: {e}), cut short or not fully written: "
                    f"{fix}") from None


def _npz_array(arrays, key: str, path: str) -> np.ndarray:
  try:
    return arrays[key]
  except ValueError:  # numpy refuses an object array without allow_pickle, which fnets never sets
    raise DataError(f"{path}: {key} is an array of Python objects, which fnets does not load (unpickling runs "
                    f"code); save it as numbers: numpy.savez(path, {key}=numpy.asarray(..., numpy.uint8 or "
                    f"numpy.int64), ...)") from None
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise DataError(f"{path}: {key} cannot be read ({type(e).__name__}: {e}), the file is damaged: write it again "
                    f"with numpy.savez") from None


def read_npz(path: str) -> dict:
  """Like `read_folder`, from x_train, y_train[, x_test, y_test]; the classes are 0..max(y_train)."""
  arrays = _npz_arrays(path)
  with arrays:
    keys = set(arrays.files)
    if missing := [k for k in ("x_train", "y_train") if k not in keys]:
      raise DataError(f"{path} has no {' or '.join(missing)} (it has: {', '.join(sorted(keys)) or 'nothing'}); "
                      f"give x_train (N, H, W[, C]) and y_train (N,), optionally x_test and y_test")
    if ("x_test" in keys) != ("y_test" in keys):
      raise DataError(f"{path} has {'x_test' if 'x_test' in keys else 'y_test'} without its pair; give both or "
                      f"neither")
    x = _pixels(_npz_array(arrays, "x_train", path), "x_train", path)
    y = _labels(_npz_array(arrays, "y_train", path), "y_train", path, len(x), None)
    num_classes = int(y.max()) + 1 if len(y) else 0
    if num_classes < 2:
      raise DataError(f"{path}: y_train holds {num_classes} class{'es' if num_classes != 1 else ''}; a classifier "
                      f"needs at least 2")
    out = {"train": (x, y), "test": None, "classes": [str(k) for k in range(num_classes)]}
    if "x_test" in keys:
      x_test = _pixels(_npz_array(arrays, "x_test", path), "x_test", path)
      if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: x_test's images are {x_test.shape[1:]}, x_train's {x.shape[1:]}; give both the "
                        f"same shape")
      out["test"] = (x_test, _labels(_npz_array(arrays, "y_test", path), "y_test", path, len(x_test), num_classes))
  return out
