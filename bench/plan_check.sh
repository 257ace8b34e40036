#!/usr/bin/env bash
# `moe plan --gpu cpu` against `moe bench train` on this machine (issue 20's checks 2 and 3): for
# each case, the plan's state bytes per rank (exact), its expected peak against the measured peak
# RSS (goal: within 15%), and its step time against the measured one (goal: within 20%). A
# benchmark, not a test: it prints numbers and never fails on them; run it on a quiet machine (the
# plan times the GEMMs and kernels it composes, the bench times the step: both feel a busy CPU).
# Usage: bench/plan_check.sh [threads]   (default 2)   env STEPS (default 4), MOE (binary)
set -euo pipefail
cd "$(dirname "$0")/.."
MOE=${MOE:-build/moe}
STEPS=${STEPS:-4}
THREADS=${1:-2}
[ -x "$MOE" ] || { echo "build first: make build (no $MOE)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

# case: <name> <ranks> <config> [--set ...]
cases=(
  "shakespeare-bf16|1|configs/shakespeare.yaml|--set train.precision=bf16"
  "shakespeare-fp32|1|configs/shakespeare.yaml|--set train.precision=fp32"
  "shakespeare-fp32-np2|2|configs/shakespeare.yaml|--set train.precision=fp32"
  "moe-1b-2layers-bf16|1|configs/moe-1b.yaml|--set model.layers=2 --set train.micro_batch=1 --set train.precision=bf16"
  "moe-1b-2layers-fp32|1|configs/moe-1b.yaml|--set model.layers=2 --set train.micro_batch=1 --set train.precision=fp32"
)
printf '%-22s %5s %12s %12s %9s %9s %7s %9s %9s %7s\n' case ranks "state plan" "state meas" "peak plan" "RSS meas" "diff" \
  "step plan" "step meas" "diff"
for c in "${cases[@]}"; do
  IFS='|' read -r name np config sets <<< "$c"
  threads=$(( THREADS / np )); [ "$threads" -ge 1 ] || threads=1
  # shellcheck disable=SC2086
  "$MOE" plan --config "$config" --gpus "$np" --gpu cpu --threads "$threads" $sets --best 0 --json > "$TMP/plan.json"
  # shellcheck disable=SC2086
  mpirun -np "$np" --bind-to none "$MOE" bench train --config "$config" --steps "$STEPS" --warmup 1 --threads "$threads" $sets |
    tail -1 > "$TMP/bench.json"
  python3 - "$TMP/plan.json" "$TMP/bench.json" "$name" "$np" <<'PY'
import json, sys
plan, bench = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
peak = plan["memory_bytes"]["peak"] / 2**20
rss = bench["peak_rss_mib"]
step, meas = plan["step_s"] * 1000, bench["step_ms"]
print(f"{sys.argv[3]:<22} {sys.argv[4]:>5} {plan['memory_bytes']['state']:>12} {bench['state_bytes_per_rank']:>12} "
      f"{peak:>7.0f}Mi {rss:>7.0f}Mi {100 * (peak - rss) / rss:>+6.1f}% {step:>7.0f}ms {meas:>7.0f}ms {100 * (step - meas) / meas:>+6.1f}%")
print("    plan split (s):", {k: round(v, 4) for k, v in plan["compute_split_s"].items()},
      " measured split:", bench["time_split"], file=sys.stderr)
PY
done
