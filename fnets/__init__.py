"""fnets: functional JAX/Flax networks (CNN, MLP, LSTM) as pure functions, trained with jit and Optax."""

import os
import sys

# XLA:CPU sends convolutions to YNNPACK by default; its weight-gradient convolution runs at ~9 GFLOP/s here
# against ~95 GFLOP/s for XLA's own (benchmarks/conv_cpu.py). The flag only affects CPU and must be in the
# environment before JAX creates its backend, so it is set on import of fnets.
_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
if "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_CONV_FLAG}".strip()

# What fnets keeps between runs, per user: JAX's compiled programs (jax/) and decoded datasets (decoded/).
CACHE_DIR = os.path.expanduser(os.environ.get("FNETS_CACHE_DIR")
                               or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "fnets"))

# JAX's persistent compilation cache, on by default: a resumed or repeated run loads its compiled steps instead
# of compiling them again. A cache dir the user chose (JAX_COMPILATION_CACHE_DIR) wins, and
# JAX_ENABLE_COMPILATION_CACHE=false turns it off. The size limit (LRU) also makes JAX lock the cache (filelock),
# so that runs sharing it at once never read a half-written entry.
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
