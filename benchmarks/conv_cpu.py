"""Why fnets sets --xla_cpu_experimental_ynn_fusion_type=-individual_convolution: GFLOP/s of a 3×3 32→32
convolution at 32×32, batch 128 (forward, input gradient, weight gradient) with XLA:CPU's default convolution
path (YNNPACK) and with the flag, each in a fresh process (XLA reads flags once), against a matmul of the same
FLOPs.

  python benchmarks/conv_cpu.py
"""

import os
import subprocess
import sys

CHILD = r"""
import time, jax, jax.numpy as jnp
from jax import lax
B, H, C, F = 128, 32, 32, 32
x = jax.random.normal(jax.random.key(0), (B, H, H, C)); w = jax.random.normal(jax.random.key(1), (3, 3, C, F))
conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
flops = 2 * B * H * H * 9 * C * F
def rate(f, *a, n=10):
  jax.block_until_ready(f(*a)); t = time.perf_counter()
  for _ in range(n): r = f(*a)
  jax.block_until_ready(r); return flops / ((time.perf_counter() - t) / n) / 1e9
a = jax.random.normal(jax.random.key(2), (B * H * H, 9 * C)); b = jax.random.normal(jax.random.key(3), (9 * C, F))
print(f"fwd {rate(jax.jit(conv), x, w):6.1f}  d/dx {rate(jax.jit(jax.grad(lambda x, w: conv(x, w).sum())), x, w):6.1f}"
      f"  d/dw {rate(jax.jit(jax.grad(lambda x, w: conv(x, w).sum(), 1)), x, w):6.1f}"
      f"  matmul {rate(jax.jit(jnp.matmul), a, b):6.1f}  GFLOP/s")
"""


def main():
  for label, flags in [("XLA default (YNNPACK convs)", ""),
                       ("fnets (flag set)", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")]:
    env = {**os.environ, "XLA_FLAGS": flags}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True).stdout
    print(f"{label:<28} {out.strip()}")


if __name__ == "__main__":
  main()
