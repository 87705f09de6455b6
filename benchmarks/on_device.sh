#!/usr/bin/env bash
# fnets on a machine with an accelerator: the test suite, the CNN and LSTM step benchmarks and a cnn_cifar run,
# each under its own time limit (about 8 minutes in all), printing each one's figures and a summary.
#
#   pip install -e ".[test,cuda12]"            # or, where jax for the GPU is installed: pip install --no-deps -e .
#   TFDS_DATA_DIR=DIR bash benchmarks/on_device.sh [RUN_SECONDS]   # DIR holds cifar10 (without it: the run is skipped)
#
# RUN_SECONDS (default 180) bounds the cnn_cifar run: at the limit it gets SIGTERM, saves its checkpoint and stops;
# the figures are then those of the steps it made. Logs go to $ON_DEVICE_LOGS (default: a new temp dir).
# Each part runs even when an earlier one failed; the script exits non-zero if any failed.
# PYTHON (default: python3) is the interpreter with fnets installed.
# ON_DEVICE_SMOKE=1 (tests/test_benchmarks.py, on any machine): no test suite, the benchmarks at --smoke sizes, the
# run (if there is data) 2 steps: seconds, for checking the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_SECONDS=${1:-180}
SMOKE=${ON_DEVICE_SMOKE:-}
LOGS=${ON_DEVICE_LOGS:-$(mktemp -d)}
mkdir -p "$LOGS"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
declare -A STATUS
part() {  # part NAME LIMIT_S COMMAND...: run it under `timeout`, tee its log, record its exit status and time
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout -s TERM -k 20 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
  local rc=${PIPESTATUS[0]}
  STATUS[$name]="exit $rc, $((SECONDS - t0)) s"
  echo "== $name: ${STATUS[$name]}"
}

"$PYTHON" -c "import jax, fnets; print('jax', jax.__version__, jax.default_backend(), jax.devices())" \
  || { echo "fnets or jax does not import: install them first (see the top of this script)"; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi -L

# The suite, in up to 8 workers; each takes GPU memory as it needs it (JAX's default, 75% of it up front, would
# leave nothing for the second worker). -x stops at the first failure.
WORKERS=$(( $(nproc) < 8 ? $(nproc) : 8 ))
if [ -n "$SMOKE" ]; then
  STATUS[tests]="skipped: ON_DEVICE_SMOKE"
else
  XLA_PYTHON_CLIENT_PREALLOCATE=false part tests 300 "$PYTHON" -m pytest -x -p no:cacheprovider -n "$WORKERS"
fi
part cnn_step 120 "$PYTHON" benchmarks/cnn_cifar_recipe.py --rounds=5 --steps=5 ${SMOKE:+--smoke}
part lstm_step 120 "$PYTHON" benchmarks/lstm_speed.py --quick ${SMOKE:+--smoke}

DATA=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
if [ -d "$DATA/cifar10" ]; then
  WORKDIR="$LOGS/cnn_cifar"
  part cnn_cifar "$RUN_SECONDS" "$PYTHON" launch.py --experiment=cnn_cifar --workdir="$WORKDIR" \
    ${SMOKE:+--config.max_steps=2}
  grep -E '^\[(train|test)\]' "$LOGS/cnn_cifar.log" | tail -4
else
  STATUS[cnn_cifar]="skipped: no cifar10 in $DATA"
fi

echo "== summary (logs in $LOGS)"
failed=0
for name in tests cnn_step lstm_step cnn_cifar; do
  echo "  $name: ${STATUS[$name]}"
  # (the run's stop at its time limit, exit 124 of `timeout`, is the plan: it saved its checkpoint)
  [[ ${STATUS[$name]} == "exit 0,"* || ${STATUS[$name]} == skipped* || ( $name == cnn_cifar && ${STATUS[$name]} == "exit 124,"* ) ]] || failed=1
done
[ -n "$SMOKE" ] || grep -hE 'passed|failed' "$LOGS/tests.log" | tail -1
grep -hE 'ms/step' "$LOGS/cnn_step.log"
grep -hE 'tokens/s|fnets / ' "$LOGS/lstm_step.log" | head -12
exit $failed
