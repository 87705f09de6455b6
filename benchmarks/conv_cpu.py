"""Why fnets sets --xla_cpu_experimental_ynn_fusion_type=-individual_convolution: GFLOP/s of a 3×3 32→32
convolution at 32×32, batch 128 (forward, input gradient, weight gradient) with XLA:CPU's default convolution path
(YNNPACK) and with the flag, each in a fresh process (XLA reads flags once), against a matmul of the same FLOPs.

  python benchmarks/conv_cpu.py [--batch_size=128] [--repeats=10]
  python benchmarks/conv_cpu.py --smoke     # batch 2, 1 repeat: seconds, meaningless figures

It guards the flag's value: rerun it when jaxlib changes (fnets sets the flag only for the versions it checked).
"""

import argparse
import os
import subprocess
import sys

CHILD = r"""
import sys, time, jax, jax.numpy as jnp
from jax import lax
B, N = int(sys.argv[1]), int(sys.argv[2])
H, C, F = 32, 32, 32
x = jax.random.normal(jax.random.key(0), (B, H, H, C)); w = jax.random.normal(jax.random.key(1), (3, 3, C, F))
conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
flops = 2 * B * H * H * 9 * C * F
def rate(f, *a, n=N):
  jax.block_until_ready(f(*a)); t = time.perf_counter()
  for _ in range(n): r = f(*a)
  jax.block_until_ready(r); return flops / ((time.perf_counter() - t) / n) / 1e9
a = jax.random.normal(jax.random.key(2), (B * H * H, 9 * C)); b = jax.random.normal(jax.random.key(3), (9 * C, F))
print(f"fwd {rate(jax.jit(conv), x, w):6.1f}  d/dx {rate(jax.jit(jax.grad(lambda x, w: conv(x, w).sum())), x, w):6.1f}"
      f"  d/dw {rate(jax.jit(jax.grad(lambda x, w: conv(x, w).sum(), 1)), x, w):6.1f}"
      f"  matmul {rate(jax.jit(jnp.matmul), a, b):6.1f}  GFLOP/s")
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=10, help="timed calls of each function")
  parser.add_argument("--smoke", action="store_true")
  args = parser.parse_args()
  if args.smoke:
    args.batch_size, args.repeats = 2, 1
  for label, flags in [("XLA default (YNNPACK convs)", ""),
                       ("fnets (flag set)", "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")]:
    env = {**os.environ, "XLA_FLAGS": flags}
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.batch_size), str(args.repeats)], env=env,
                         capture_output=True, text=True, check=True).stdout
    print(f"{label:<28} {out.strip()}")


if __name__ == "__main__":
  main()
