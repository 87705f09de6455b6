"""pyproject.toml: the base install carries no TensorFlow; the `data` extra picks the TensorFlow package that has
wheels on each platform; the accelerator extras pin the base install's jax range."""

import os
import tomllib

from packaging.requirements import Requirement

from fnets.data import tfds_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
  PROJECT = tomllib.load(f)["project"]
BASE = [Requirement(r) for r in PROJECT["dependencies"]]
EXTRAS = {name: [Requirement(r) for r in reqs] for name, reqs in PROJECT["optional-dependencies"].items()}

# The marker variables of each platform (as `packaging.markers.default_environment()` gives them there).
PLATFORMS = {
    "linux x86_64": {"sys_platform": "linux", "platform_machine": "x86_64", "platform_system": "Linux"},
    "windows amd64": {"sys_platform": "win32", "platform_machine": "AMD64", "platform_system": "Windows"},
    "macos arm64": {"sys_platform": "darwin", "platform_machine": "arm64", "platform_system": "Darwin"},
    "linux aarch64": {"sys_platform": "linux", "platform_machine": "aarch64", "platform_system": "Linux"},
}
# Where tensorflow-cpu 2.20/2.21 has wheels (PyPI's file lists: manylinux x86_64 and win_amd64 only).
TENSORFLOW_FOR = {"linux x86_64": "tensorflow-cpu", "windows amd64": "tensorflow-cpu", "macos arm64": "tensorflow",
                  "linux aarch64": "tensorflow"}


def selected(requirements, platform):
  return [r.name for r in requirements if r.marker is None or r.marker.evaluate(PLATFORMS[platform])]


def test_base_install_has_no_tensorflow():
  for r in BASE:
    assert r.name not in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorboard"), r


def test_training_requirements_are_in_the_base_install():
  names = {r.name for r in BASE}
  assert {"jax", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "ml-collections", "absl-py", "numpy",
          "pillow", "array-record", "importlib-resources", "tensorboardX"} <= names


def test_data_extra_picks_the_tensorflow_with_wheels_on_each_platform():
  for platform, package in TENSORFLOW_FOR.items():
    assert selected(EXTRAS["data"], platform) == [package], platform
  specifiers = {str(r.specifier) for r in EXTRAS["data"]}
  assert len(specifiers) == 1  # the same versions, whichever package


def test_missing_data_error_names_the_data_extra():
  assert 'pip install "fnets[data]"' in tfds_source.INSTALL_DATA_EXTRA
  assert 'pip install -e ".[data]"' in tfds_source.INSTALL_DATA_EXTRA


def test_accelerator_extras_pin_the_base_jax_range():
  (jax,) = [r for r in BASE if r.name == "jax"]
  for extra, jax_extra in (("cuda12", "cuda12"), ("tpu", "tpu")):
    (r,) = EXTRAS[extra]
    assert r.name == "jax" and r.extras == {jax_extra} and r.specifier == jax.specifier


def test_tensorboard_is_an_extra():
  assert [r.name for r in EXTRAS["tensorboard"]] == ["tensorboard"]


def test_test_extra_needs_no_tensorflow():
  assert not {"tensorflow", "tensorflow-cpu"} & {r.name for r in EXTRAS["test"]}
