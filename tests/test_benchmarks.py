"""Every benchmark in benchmarks/ runs at its tiny size (`--smoke`; on_device.sh with ON_DEVICE_SMOKE=1; small
arguments for image_folder.py) in a subprocess and prints its figures. No data is needed: random images and text,
or TFDS mocked (startup.py). Not run here: benchmarks/notebooks_in_colab.py (it needs the package index;
tests/test_notebook_install.py checks the install cell)."""

import importlib.util
import json
import os
import re
import subprocess
import sys

from conftest import ROOT

BENCHMARKS = os.path.join(ROOT, "benchmarks")


def run(*command, env=None, timeout=180) -> str:
  out = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                       timeout=timeout)
  assert out.returncode == 0, f"{' '.join(command)}: exit {out.returncode}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
  return out.stdout


def bench(script: str, *args: str) -> str:
  return run(sys.executable, os.path.join(BENCHMARKS, script), *args)


def test_every_benchmark_is_listed_and_smoke_tested():
  with open(os.path.join(BENCHMARKS, "README.md")) as f:
    readme = f.read()
  with open(__file__) as f:
    tests = f.read()
  for name in sorted(os.listdir(BENCHMARKS)):
    if name != "README.md" and not name.startswith((".", "__")):
      assert f"`{name}`" in readme, f"benchmarks/{name} is not in benchmarks/README.md's index"
      assert name == "notebooks_in_colab.py" or f'"{name}"' in tests, f"benchmarks/{name} has no smoke test here"


def test_on_device_sh_runs_cnn_cifar_recipe_and_lstm_speed(tmp_path):
  """on_device.sh as on a GPU machine, at smoke sizes: the two step benchmarks it runs, its summary."""
  out = run("bash", os.path.join(BENCHMARKS, "on_device.sh"),
            env={"PYTHON": sys.executable, "ON_DEVICE_SMOKE": "1", "ON_DEVICE_LOGS": str(tmp_path / "logs"), "TFDS_DATA_DIR": str(tmp_path)})
  for part in ("cnn_step: exit 0", "lstm_step: exit 0", "cnn_cifar: skipped: no cifar10", "tests: skipped"):
    assert part in out, out
  assert "cnn_cifar_recipe.py" in out and "lstm_speed.py" in out
  assert re.search(r"real step +\d+ ms/step", out) and "input pipeline cost" in out, out
  assert re.search(r"fnets \(unroll 1\) +\d+ tokens/s", out) and "fnets / flax" in out, out


def test_cnn_cifar_recipe_time_to_accuracy(tmp_path):
  """With --workdir of a finished run: its config's FLOPs and its time to accuracy from its records."""
  sys.path.insert(0, ROOT)
  from fnets.experiments import cnn_cifar
  config = cnn_cifar.get_config()
  config.batch_size = 8
  (tmp_path / "config.json").write_text(config.to_json())
  records = [{"split": "train", "step": 3, "epoch": 0.5, "examples_per_sec": 0.4},  # 60 s
             {"split": "train", "step": 6, "epoch": 1.0, "examples_per_sec": 0.8},  # 30 s
             {"split": "train", "step": 9, "epoch": 1.5, "examples_per_sec": 0.4},  # 60 s, in the second epoch
             {"split": "test", "step": 9, "accuracy": 0.125, "loss": 2.5}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  out = bench("cnn_cifar_recipe.py", "--smoke", f"--workdir={tmp_path}", "--wall=3:00", "--rounds=0")
  assert re.search(r"XLA's count: \d+ MFLOP per training image, \d+ per test image", out), out
  assert "time per epoch (training only): 1.5, 1.0 min; training 2.5 min" in out, out
  assert "whole command 3.0 min" in out, out
  assert "test accuracy (final model): 12.50%" in out and "ms/step" not in out, out


def test_cnn_cifar_torch():
  """fnets' half always; PyTorch's where torch is installed (it is no dependency)."""
  out = bench("cnn_cifar_torch.py", "--smoke")
  assert re.search(r"fnets +\d+ ms/step", out), out
  if importlib.util.find_spec("torch"):
    assert "fnets speed / torch speed" in out, out
  else:
    assert "torch not installed" in out, out


def test_conv_cpu():
  out = bench("conv_cpu.py", "--smoke")
  assert len(re.findall(r"fwd +[\d.]+ +d/dx +[\d.]+ +d/dw +[\d.]+ +matmul +[\d.]+ +GFLOP/s", out)) == 2, out


def test_data_parallel():
  out = bench("data_parallel.py", "--smoke")
  for model in ("cnn_mnist", "lstm"):
    assert re.search(model + r" +8 device\(s\), global batch \d+: [\d.]+ steps/s", out), out
    assert re.search(model + r" +8 devices / 1 device: [\d.]+x", out), out


def test_sweep_speed():
  """The LM (with torch's column where it is installed), with its peak-RSS children (the image models' sweep steps
  are tests/test_sweeps.py's)."""
  out = bench("sweep_speed.py", "--smoke", "--rss", "--models=lm")
  for name in ("lm (fused)",):
    assert re.search(re.escape(name) + r" +sweep / sequential [\d.]+x", out), out
    assert re.search(re.escape(name) + r" +XLA step memory .*single [\d.]+ MB, sweep of 2 [\d.]+ MB", out), out
    assert re.search(re.escape(name) + r" +peak RSS of a fresh process .*single \d+ MB, sweep of 2 \d+ MB .*above "
                     r"the RSS after the imports: single \+-?\d+ MB, sweep \+-?\d+ MB", out), out
  assert ("sweep / torch" in out) == bool(importlib.util.find_spec("torch")), out
  assert "== summary" in out and "jax " in out, out


def test_image_folder():
  """(No --smoke: its own small sizes.)"""
  out = bench("image_folder.py", "--images=40", "--rounds=1")
  assert re.search(r"decode: 1 worker [\d.]+ s", out) and re.search(r"data phase: first start [\d.]+ s", out), out


def test_startup():
  out = bench("startup.py", "--smoke")
  assert re.search(r"resume, no compile cache +[\d.]+", out) and "second start sooner than the first" in out, out


def test_jax_versions():
  """This interpreter (the benchmark compares two installs, oldest and newest; --smoke runs one child each)."""
  out = bench("jax_versions.py", f"--python={sys.executable}", "--smoke")
  assert re.search(r"cnn_cifar b16\n +jax .*, flag on +[\d.]+ ", out), out
  assert "LSTM grad B16 H64 scan, T=4: us per time step" in out and "LSTM LM small" in out, out
