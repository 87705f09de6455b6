"""Data of your own: a UTF-8 text file for the char-LM (text:PATH), a folder of images (folder:PATH), arrays in
a .npz (npz:PATH). The tests write the data they use."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from fnets import config as config_lib
from fnets import loop
from fnets.data import image_files, images, text
from fnets.errors import ConfigError, DataError

TEXT = ("Ein Männlein steht im Walde ganz still und stumm, es hat von lauter Purpur ein Mäntlein um. "
        "Sagt, wer mag das Männlein sein, das da steht im Wald allein mit dem purpurroten Mäntelein? ") * 12


def lm_config(path, *args):
  from fnets.experiments import lstm_shakespeare
  return config_lib.override(lstm_shakespeare.get_config(), [
      f"--config.dataset=text:{path}", "--config.batch_size=4", "--config.seq_len=16", "--config.num_steps=6",
      "--config.eval_every_steps=3", "--config.eval_streams=2", "--config.log_every_steps=3",
      "--config.model.embed_dim=8", "--config.model.hidden_size=16", "--config.sample_length=20",
      "--config.sample_prompt=Ein", *args])


def image_config(dataset, *args):
  from fnets.experiments import cnn_mnist
  return config_lib.override(cnn_mnist.get_config(), [
      f"--config.dataset={dataset}", "--config.batch_size=8", "--config.eval_batch_size=16", "--config.num_epochs=2",
      "--config.log_every_steps=1", "--config.model.conv_features=(4,8)", "--config.model.pool_after=(1,)",
      "--config.model.dense_features=(16,)", "--config.validation_percent=20", *args])


def write_folder(root, classes=("cat", "dog", "owl"), per_class=10, size=(8, 8), layout="flat", mode="RGB"):
  rng = np.random.default_rng(0)
  splits = {"": per_class} if layout == "flat" else {"train": per_class, "test": 3}
  for split, count in splits.items():
    for label, name in enumerate(classes):
      directory = root / split / name
      directory.mkdir(parents=True, exist_ok=True)
      for i in range(count):
        pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8) // 2 + 40 * label  # classes differ
        Image.fromarray(pixels, "RGB").convert(mode).save(directory / f"{i:03d}.png")
  return root


def test_text_file_trains_samples_evaluates_and_exports_with_its_own_vocabulary(tmp_path):
  path = tmp_path / "lied.txt"
  path.write_text(TEXT + "Ωmega", encoding="utf-8")  # Ω only in the test part: the unknown symbol stands for it
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(lm_config(path), workdir)
  assert np.isfinite(result["test"]["loss"]) and result["eval"]["num_chars"] > 0
  vocab = json.load(open(os.path.join(workdir, "vocab.json")))["chars"]
  assert text.UNKNOWN in vocab and "ä" in vocab and "Ω" not in vocab
  assert open(os.path.join(workdir, "sample.txt")).read().startswith("Ein")
  record = json.load(open(os.path.join(workdir, "run.json")))[-1]
  assert record["data"]["vocab_size"] == len(vocab)
  # --mode=eval and export use the saved vocabulary, even when the file has changed since.
  path.write_text("Zzz" + TEXT, encoding="utf-8")
  evaluated = loop.evaluate_checkpoint(config_lib.from_json(json.load(open(os.path.join(workdir, "config.json")))),
                                       workdir)
  assert np.isfinite(evaluated["test"]["loss"])
  exported = loop.export(lm_config(path), workdir)
  torch_names = np.load(exported["torch"])
  assert torch_names["embed.weight"].shape == (len(vocab), 8)


def test_text_splits_are_contiguous_blocks_and_unknown_characters_get_one_symbol(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("a" * 90 + "b" * 5 + "c" * 5, encoding="utf-8")
  parts = text.read_text_file(str(path))
  assert parts == {"train": "a" * 90, "validation": "b" * 5, "test": "c" * 5}
  vocab = text.Vocab.from_text(parts["train"], unknown=True)
  assert vocab.decode(vocab.encode("abc")) == "a" + text.UNKNOWN * 2
  with pytest.raises(ValueError, match="not in the vocabulary"):
    text.Vocab.from_text("a").encode("b")  # TFDS's texts have no unknown symbol: an unknown character is an error


def test_bad_text_files_are_named_with_the_fix(tmp_path):
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes("Grüße".encode("latin-1") * 50)
  with pytest.raises(DataError, match=rf"{latin1} is not UTF-8: byte 0xfc at byte offset 2 .*iconv"):
    text.read_text_file(str(latin1))
  short = tmp_path / "short.txt"
  short.write_text("too short for a batch of windows", encoding="utf-8")
  with pytest.raises(ConfigError, match=rf"characters of the train text of text:{short}; use a smaller batch"):
    loop.train_and_evaluate(lm_config(short), str(tmp_path / "run"))
  with pytest.raises(DataError, match="no such file or directory|No such file"):
    text.read_text_file(str(tmp_path / "absent.txt"))
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_image_folder_trains_with_its_classes_held_out_and_test_split(tmp_path, layout):
  root = write_folder(tmp_path / "pets", layout=layout)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(image_config(f"folder:{root}"), workdir)
  assert json.load(open(os.path.join(workdir, "classes.json")))["classes"] == ["cat", "dog", "owl"]
  data = json.load(open(os.path.join(workdir, "run.json")))[-1]["data"]
  assert data == {"num_classes": 3, "image_shape": [8, 8, 3], "classes": ["cat", "dog", "owl"],
                  "train_examples": 24 if layout == "flat" else 24}
  assert result["eval"]["num_examples"] == 6  # 20% of the 30 training images, the same for every seed
  if layout == "split":
    assert result["test"]["num_examples"] == 9
  else:  # no test folder: no test record
    assert result["test"] is None
    assert not any(json.loads(line)["split"].startswith("test") for line in open(os.path.join(workdir, "metrics.jsonl")))


def test_folder_is_decoded_once_and_resized_on_request(tmp_path, monkeypatch):
  root = write_folder(tmp_path / "mixed", per_class=4)
  Image.new("RGB", (12, 10)).save(root / "dog" / "wide.png")
  with pytest.raises(DataError, match=r"wide.png is 12×10 pixels where .* is 8×8: resize it or set --config.image_size=N"):
    images.load(f"folder:{root}", validation_percent=0)
  first = images.load(f"folder:{root}", validation_percent=0, image_size=6)
  assert first.train.images_NHWC.shape == (13, 6, 6, 3)
  monkeypatch.setattr(image_files, "decode_all", lambda *a, **k: pytest.fail("decoded again"))
  again = images.load(f"folder:{root}", validation_percent=0, image_size=6)  # from the cache
  np.testing.assert_array_equal(again.train.images_NHWC, first.train.images_NHWC)


def test_decoding_in_several_processes_gives_the_same_arrays(tmp_path):
  root = write_folder(tmp_path / "many", per_class=400, size=(4, 4))
  paths, _, _ = image_files._list_split(str(root), "train")
  np.testing.assert_array_equal(image_files.decode_all(paths, workers=2), image_files.decode_all(paths, workers=1))


def test_bad_folders_are_named_with_the_fix(tmp_path, monkeypatch):
  def error(root, **kw):
    with pytest.raises(DataError) as caught:
      images.load(f"folder:{root}", validation_percent=0, **kw)
    return str(caught.value)

  (tmp_path / "empty").mkdir()
  assert "holds 0 class folders (none); a classifier needs at least 2" in error(tmp_path / "empty")
  assert "holds 1 class folder (cat)" in error(write_folder(tmp_path / "one", classes=("cat",)))
  no_images = write_folder(tmp_path / "hollow")
  for f in (no_images / "owl").iterdir():
    f.unlink()
  assert f"class folder {no_images / 'owl'} holds no images" in error(no_images)
  broken = write_folder(tmp_path / "broken", per_class=3)
  (broken / "dog" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  cache = os.path.join(os.environ["FNETS_CACHE_DIR"], "decoded", "folder")
  before = set(os.listdir(cache)) if os.path.isdir(cache) else set()
  assert f"image {broken / 'dog' / '001.png'} cannot be read as an image" in error(broken)
  after = set(os.listdir(cache)) if os.path.isdir(cache) else set()
  assert after == before  # a failed decode leaves no cache entry, not even half of one
  assert "no such directory" in error(tmp_path / "absent")


def test_npz_arrays_train_and_bad_ones_are_named(tmp_path):
  rng = np.random.default_rng(0)
  good = tmp_path / "good.npz"
  np.savez(good, x_train=rng.integers(0, 256, (40, 6, 6), dtype=np.uint8), y_train=np.arange(40) % 4,
           x_test=rng.integers(0, 256, (8, 6, 6), dtype=np.uint8), y_test=np.arange(8) % 4)
  result = loop.train_and_evaluate(image_config(f"npz:{good}"), str(tmp_path / "run"))
  assert result["test"]["num_examples"] == 8
  data = json.load(open(tmp_path / "run" / "run.json"))[-1]["data"]
  assert data["num_classes"] == 4 and data["image_shape"] == [6, 6, 1]

  def error(**arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as caught:
      images.load(f"npz:{path}", validation_percent=0)
    return str(caught.value)

  x = np.zeros((4, 2, 2), np.uint8)
  assert "has no y_train (it has: x_train)" in error(x_train=x)
  assert "y_train has shape (3,) for 4 images" in error(x_train=x, y_train=np.array([0, 1, 0]))
  assert "y_test holds the label 5, outside 0..1" in error(x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x,
                                                           y_test=np.array([0, 5, 0, 1]))
  assert "x_train holds float64 values outside the integers 0..255" in error(x_train=x + 0.5, y_train=np.arange(4) % 2)
  assert "x_test without its pair" in error(x_train=x, y_train=np.arange(4) % 2, x_test=x)


def test_bad_own_data_from_the_command_line_is_one_line(tmp_path):
  """The launcher's view: one line, exit 2, no workdir."""
  write_folder(tmp_path / "one", classes=("cat",))
  proc = subprocess.run([sys.executable, "launch.py", "--experiment=cnn_mnist", f"--workdir={tmp_path / 'run'}",
                         f"--config.dataset=folder:{tmp_path / 'one'}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
  assert "holds 1 class folder (cat); a classifier needs at least 2" in proc.stderr
  assert not (tmp_path / "run").exists()


def write_png(path, image):
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path)
  return path


def test_a_folder_of_mixed_modes_is_one_mode_and_16_bit_images_are_scaled(tmp_path):
  """L, RGB, RGBA, P and 16-bit grey images of one size: RGB for all (transparent pixels onto white), 16-bit
  values scaled to 8 bits; a folder without colour stays grey; AppleDouble files (._NAME) are not images."""
  rgb = np.zeros((8, 8, 3), np.uint8)
  rgb[..., 0] = 200  # red
  root = tmp_path / "mixed"
  write_png(root / "a" / "rgb.png", Image.fromarray(rgb, "RGB"))
  write_png(root / "a" / "grey.png", Image.new("L", (8, 8), 77))
  clear = Image.new("RGBA", (8, 8), (10, 20, 30, 0))  # fully transparent
  write_png(root / "b" / "clear.png", clear)
  write_png(root / "b" / "palette.png", Image.fromarray(rgb, "RGB").convert("P"))
  write_png(root / "b" / "deep.png", Image.fromarray(np.full((8, 8), 128 * 257, np.uint16)))  # mode I;16
  (root / "b" / "._deep.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
  data = image_files.read_folder(str(root))
  x, y = data["train"]
  assert x.shape == (5, 8, 8, 3) and list(y) == [0, 0, 1, 1, 1]
  by_name = dict(zip(["grey", "rgb", "clear", "deep", "palette"], x))
  assert (by_name["grey"] == 77).all() and (by_name["rgb"][..., 0] == 200).all()
  assert (by_name["clear"] == 255).all()  # onto white
  assert (by_name["deep"] == 128).all()  # not clipped to 255
  grey_root = tmp_path / "grey"
  write_png(grey_root / "a" / "0.png", Image.new("L", (8, 8), 3))
  write_png(grey_root / "b" / "0.png", Image.fromarray(np.full((8, 8), 65535, np.uint16)))
  x, _ = image_files.read_folder(str(grey_root))["train"]
  assert x.shape == (2, 8, 8, 1) and x[0].max() == 3 and x[1].min() == 255


def test_photos_are_turned_upright_and_cmyk_becomes_rgb(tmp_path):
  exif = Image.Exif()
  exif[0x0112] = 6  # EXIF orientation: rotate 90° to view
  Image.new("RGB", (8, 4), (0, 90, 0)).save(tmp_path / "turned.jpg", exif=exif)
  Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
  turned, colour = image_files._decode_one(str(tmp_path / "turned.jpg"), 0)
  assert turned.shape == (8, 4, 3) and colour
  cmyk, colour = image_files._decode_one(str(tmp_path / "cmyk.jpg"), 0)
  assert cmyk.shape == (8, 8, 3) and colour and cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 60
  path, why = image_files._decode_one(str(tmp_path / "gone.png"), 0)  # listed, then deleted before decoding
  assert why.startswith("cannot be read as an image (FileNotFoundError")


def test_damaged_images_links_and_cache_entries(tmp_path, monkeypatch):
  root = write_folder(tmp_path / "ok", per_class=2)
  first = image_files.read_folder(str(root))["train"][0]
  entry = image_files._cache_path(str(root), image_files._list_split(str(root), "train")[0], 0)
  open(entry, "w").close()  # emptied, as by a full disk
  np.testing.assert_array_equal(image_files.read_folder(str(root))["train"][0], first)  # decoded again
  assert os.path.getsize(entry) > 0
  full = write_folder(tmp_path / "full", per_class=2)

  def disk_full(*args):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(image_files, "write_atomic", disk_full)  # the cache cannot be written: decoded all the same
  assert image_files.read_folder(str(full))["train"][0].shape == (6, 8, 8, 3)
  assert not os.path.exists(image_files._cache_path(str(full), image_files._list_split(str(full), "train")[0], 0))
  looped = write_folder(tmp_path / "looped", per_class=2)
  os.symlink(looped / "cat" / "y.png", looped / "cat" / "x.png")
  os.symlink(looped / "cat" / "x.png", looped / "cat" / "y.png")
  with pytest.raises(DataError, match=r"image .*cat/x.png cannot be read \(Too many levels of symbolic links\)"):
    image_files.read_folder(str(looped))
  import PIL.Image
  monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 10)  # so that an 8×8 image is a decompression bomb
  with pytest.raises(DataError, match=r"image .*cat/000.png is too large to decode safely .*: replace or remove it"):
    image_files.read_folder(str(write_folder(tmp_path / "bomb", per_class=2)))


def test_npz_files_that_are_not_arrays_are_named(tmp_path):
  def error(path):
    with pytest.raises(DataError) as caught:
      image_files.read_npz(str(path))
    assert "pickle" not in str(caught.value).replace("unpickling", "")  # no advice to load with pickle
    return str(caught.value)

  objects = tmp_path / "objects.npz"
  np.savez(objects, x_train=np.array([np.zeros((2, 2)), "x"], dtype=object), y_train=np.array([0, 1]))
  assert "x_train is an array of Python objects, which fnets does not load" in error(objects)
  whole = tmp_path / "whole.npz"
  np.savez(whole, x_train=np.zeros((4, 2, 2), np.uint8), y_train=np.array([0, 1, 0, 1]))
  cut = tmp_path / "cut.npz"
  cut.write_bytes(whole.read_bytes()[:300])
  assert f"{cut} is a damaged .npz" in error(cut)
  csv = tmp_path / "table.npz"
  csv.write_text("x,y\n1,2\n")
  assert f"{csv} is not a .npz file (it starts with b'x,y\\n'" in error(csv)
  negative = tmp_path / "negative.npz"
  np.savez(negative, x_train=np.zeros((3, 2, 2), np.uint8), y_train=np.array([0, -1, 1]))
  assert "y_train holds the label -1; labels are the classes' indices 0..K-1, never negative" in error(negative)


def test_text_in_utf16_and_utf32_and_an_empty_file(tmp_path):
  for encoding in ("utf-16", "utf-32", "utf-8-sig"):  # each with its byte-order mark, as Notepad saves
    path = tmp_path / f"{encoding}.txt"
    path.write_bytes(TEXT.encode(encoding))
    parts = text.read_text_file(str(path))
    assert "".join(parts.values()) == TEXT
  no_bom = tmp_path / "no_bom.txt"
  no_bom.write_bytes(TEXT.encode("utf-16-le"))
  with pytest.raises(DataError, match=r"looks like UTF-16 \(NUL bytes\); convert it, e\.g\. iconv -f utf-16le"):
    text.read_text_file(str(no_bom))
  empty = tmp_path / "empty.txt"
  empty.write_bytes(b"")
  with pytest.raises(DataError, match=rf"{empty} is empty; give a file with the text to learn"):
    text.read_text_file(str(empty))


def test_a_damaged_or_foreign_vocab_json_is_one_line_and_changes_nothing(tmp_path):
  from fnets.tasks import char_lm
  corpus = tmp_path / "corpus.txt"
  corpus.write_text(TEXT, encoding="utf-8")
  workdir = tmp_path / "run"
  workdir.mkdir()
  for content, needle in (('{"chars": "ab', "vocab.json is damaged (JSONDecodeError"),
                          ('{"letters": "ab"}', "vocab.json is damaged (KeyError"),
                          ('{"chars": "aab"}', "is not a vocabulary"),
                          ('{"chars": "xyz"}', "does not fit tiny_shakespeare")):
    (workdir / "vocab.json").write_text(content)
    config = lm_config(corpus) if "fit" not in needle else lm_config(corpus, "--config.dataset=tiny_shakespeare")
    texts = None if "fit" not in needle else {"train": TEXT, "validation": TEXT[:50], "test": TEXT[:50]}
    with pytest.raises(DataError, match=re.escape(needle)):
      char_lm.setup(config, texts=texts, workdir=str(workdir))
    assert (workdir / "vocab.json").read_text() == content and os.listdir(workdir) == ["vocab.json"]
