"""fnets: functional JAX/Flax networks (CNN, MLP, LSTM) as pure functions, trained with jit and Optax."""

import os

# XLA:CPU sends convolutions to YNNPACK by default; its weight-gradient convolution runs at ~9 GFLOP/s here
# against ~95 GFLOP/s for XLA's own (benchmarks/conv_cpu.py). The flag only affects CPU and must be in the
# environment before JAX creates its backend, so it is set on import of fnets.
_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
if "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_CONV_FLAG}".strip()

__version__ = "0.1.0"
