"""fnets: functional JAX/Flax networks (CNN, MLP, LSTM) as pure functions, trained with jit and Optax.

What importing fnets sets, all of it here (docs/design.md says more), none of it over a user's own setting:
  - XLA_FLAGS gets one XLA:CPU flag, for the jaxlib versions it was checked against (`xla_cpu_flag`);
  - JAX's persistent compilation cache goes to CACHE_DIR/jax unless JAX_COMPILATION_CACHE_DIR (or jax.config)
    names one, and JAX_ENABLE_COMPILATION_CACHE=false turns it off.
It attaches no logging handler: the loop and the launcher show fnets' lines (run_log.show_console).
"""

import os
import sys
from importlib import metadata

# XLA:CPU sends convolutions to YNNPACK by default; its weight-gradient convolution runs several times slower than
# XLA's own (benchmarks/conv_cpu.py, on each jaxlib below). The flag must be in the environment before JAX creates
# its backend. XLA aborts the process on a flag it does not know, so it is set only for the jaxlib versions it was
# measured on; elsewhere fnets starts without it, silently (run.json records the XLA_FLAGS a run had).
_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
CHECKED_JAXLIB = ("0.10.", "0.11.", "0.12.")


def xla_cpu_flag(xla_flags: str, jaxlib_version: str | None) -> str | None:
  """The XLA_FLAGS to set, or None to leave them as they are (the user set the flag, or jaxlib is unchecked)."""
  if "xla_cpu_experimental_ynn_fusion_type" in xla_flags:
    return None
  if not jaxlib_version or not jaxlib_version.startswith(CHECKED_JAXLIB):
    return None
  return f"{xla_flags} {_CONV_FLAG}".strip()


def _jaxlib_version() -> str | None:
  try:
    return metadata.version("jaxlib")
  except metadata.PackageNotFoundError:
    return None


if (_flags := xla_cpu_flag(os.environ.get("XLA_FLAGS", ""), _jaxlib_version())) is not None:
  os.environ["XLA_FLAGS"] = _flags

# What fnets keeps between runs, per user: JAX's compiled programs (jax/) and decoded datasets (decoded/).
CACHE_DIR = os.path.expanduser(os.environ.get("FNETS_CACHE_DIR")
                               or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "fnets"))

# JAX's persistent compilation cache: a resumed or repeated run loads its compiled steps instead of compiling
# them again. The size limit (LRU) also makes JAX lock the cache (filelock), so that runs sharing it at once never
# read a half-written entry.
_JAX_CACHE = {"jax_compilation_cache_dir": os.path.join(CACHE_DIR, "jax"), "jax_compilation_cache_max_size": 2**31}
if "jax" in sys.modules:  # imported first (a notebook): set JAX's config, unless set already
  import jax
  for _name, _value in _JAX_CACHE.items():
    if getattr(jax.config, _name) in (None, -1):
      jax.config.update(_name, _value)
else:  # JAX reads these when it is imported
  for _name, _value in _JAX_CACHE.items():
    os.environ.setdefault(_name.upper(), str(_value))

__version__ = "0.1.0"

