"""A folder of images of your own (`--config.dataset=folder:PATH`): decoding on every core against one, and the
data phase of a second start (the decoded cache) against the first, on a folder of PNGs it writes itself.

  python benchmarks/image_folder.py [--images=50000] [--size=32] [--rounds=2]

Each figure is a median over rounds that take turns (1 worker, all workers, ...), so a drift in the machine's
speed hits both alike. "Data phase": `images.load("folder:PATH")`, what a run does before it builds its model.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

# A cache of its own, so that "first start" means it (fnets reads the variable on import).
os.environ["FNETS_CACHE_DIR"] = CACHE = tempfile.mkdtemp(prefix="fnets_bench_cache_")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fnets.data import image_files  # noqa: E402  (JAX-free: the decoding workers import this file again)


def write_folder(root: str, count: int, size: int, classes: int = 10) -> None:
  rng = np.random.default_rng(0)
  for i in range(count):
    directory = os.path.join(root, f"class_{i % classes}")
    os.makedirs(directory, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(os.path.join(directory, f"{i}.png"))


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=50_000)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  from fnets.data import images  # (imports JAX: here, not where the spawned workers would import it too)
  root = tempfile.mkdtemp(prefix="fnets_bench_folder_")
  try:
    seconds = timed(lambda: write_folder(root, args.images, args.size))
    print(f"{args.images:,} {args.size}×{args.size} PNGs written in {seconds:.1f} s; {os.cpu_count()} cores")
    paths, _, _ = image_files._list_split(root, "train")
    cores = os.cpu_count() or 1
    decode = {1: [], cores: []}
    starts = {"first": [], "second": []}
    for _ in range(args.rounds):
      for workers in decode:
        decode[workers].append(timed(lambda: image_files.decode_all(paths, workers=workers)))
      shutil.rmtree(os.path.join(CACHE, "decoded"), ignore_errors=True)
      starts["first"].append(timed(lambda: images.load(f"folder:{root}", validation_percent=10)))
      starts["second"].append(timed(lambda: images.load(f"folder:{root}", validation_percent=10)))
    rounds = lambda times: ", ".join(f"{t:.2f}" for t in times)
    one, every = np.median(decode[1]), np.median(decode[cores])
    print(f"decode: 1 worker {one:.2f} s ({args.images / one:,.0f} images/s; rounds {rounds(decode[1])}), {cores} "
          f"workers {every:.2f} s ({args.images / every:,.0f} images/s; rounds {rounds(decode[cores])}): "
          f"{one / every:.2f}x")
    first, second = np.median(starts["first"]), np.median(starts["second"])
    print(f"data phase: first start {first:.2f} s (rounds {rounds(starts['first'])}), second start {second:.3f} s "
          f"(the cache; rounds {rounds(starts['second'])}): {first / second:.1f}x sooner")
    # What both starts share: listing the files and the size and time of each (the cache's key: a changed file
    # is decoded again), and the training images' per-channel statistics.
    key = np.median([timed(lambda: image_files._cache_path(root, paths, 0)) for _ in range(3)])
    cached = image_files._cache_path(root, paths, 0)
    read = np.median([timed(lambda: np.load(cached)) for _ in range(3)])
    print(f"  of which: the files' sizes and times {key:.3f} s; reading the cached images {read:.3f} s against "
          f"decoding them on {cores} cores {every:.2f} s ({every / read:.0f}x)")
  finally:
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(CACHE, ignore_errors=True)


if __name__ == "__main__":
  sys.exit(main())
