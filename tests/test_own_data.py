"""Data of your own: a UTF-8 text file for the char-LM (text:PATH), a folder of images (folder:PATH), arrays in
a .npz (npz:PATH). The tests write the data they use."""

import json
import os
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
  with pytest.raises(DataError, match=r"wide.png is 12×10 where .* is 8×8: resize it or set --config.image_size=N"):
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
