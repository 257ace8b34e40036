#!/usr/bin/env bash
# `moe plan` (launch/plan.h) against what the code really sends and holds, under mpirun: for each
# layout below, the plan's calls and bytes per collective kind equal the counts of `moe bench train`
# (parallel/comm_stats.h) exactly — rank 0's for every kind but the all-to-all, whose bytes vary by
# rank with the routing, and the mean over ranks for all five — and the plan's state bytes per rank
# equal the ShardedModel's. Layouts: np 2 and 4, plain FSDP and HSDP, ep 1, 2 and 4, with
# grad_accum 2; then recompute, MTP (depth 2), fp8 with fp8_dispatch, a tied embedding, and bf16
# (its rows dispatched as bf16; odd D as f32). The plan's activation bytes against what rank 0 holds
# (DeepSeekV3::activation_bytes) likewise. Then
# the plan's memory against the peak RSS of the demo's model, and refused impossible layouts.
# Usage: plan.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
fail() { echo "FAIL: $*"; exit 1; }
check() {  # check <np> <ep> <dp_replicate> [more --set ...]
  local np=$1 ep=$2 r=$3; shift 3
  local sets=(--set parallel.ep="$ep" --set parallel.dp_replicate="$r" --set train.grad_accum=2 "$@")
  local name="np${np}_ep${ep}_r${r}${*:+ $*}"
  timeout 120 mpirun -np "$np" "$MOE" bench train --config "$SRC/configs/tiny.yaml" --steps 2 --warmup 1 --threads 1 \
    "${sets[@]}" > "$TMP/bench.json" 2> "$TMP/bench.err" || { cat "$TMP/bench.err"; fail "$name: bench train"; }
  # The device does not change bytes; h100 avoids measuring this machine.
  "$MOE" plan --config "$SRC/configs/tiny.yaml" --gpus "$np" --gpu h100 "${sets[@]}" --best 0 --json > "$TMP/plan.json" ||
    fail "$name: plan"
  python3 - "$TMP/bench.json" "$TMP/plan.json" "$name" <<'PY' || fail "$name: plan differs from the counts"
import json, sys
bench = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
plan = json.load(open(sys.argv[2]))
name, bad, kinds = sys.argv[3], [], 0
for kind, p in plan["comm_per_step"].items():
    mean, rank0 = bench["comm_per_step_rank_mean"][kind], bench["comm_per_step"][kind]
    if (mean["calls"], mean["bytes"]) != (p["calls"], p["bytes"]):
        bad.append(f"{kind}: plan {p['calls']} calls {p['bytes']} B, counted (mean over ranks) {mean['calls']} calls {mean['bytes']} B")
    if kind != "all_to_all_v" and (rank0["calls"], rank0["bytes"]) != (p["calls"], p["bytes"]):
        bad.append(f"{kind}: plan {p['calls']} calls {p['bytes']} B, rank 0 counted {rank0['calls']} calls {rank0['bytes']} B")
    kinds += p["calls"] > 0
state = plan["memory_bytes"]["state"]
if state != bench["state_bytes_per_rank"]:
    bad.append(f"state: plan {state} B, measured {bench['state_bytes_per_rank']} B")
# Activations: rank 0's saved bytes of a micro-batch. The plan counts the routed rows at their mean
# (tokens x top-k), so with ep > 1 rank 0's share of them differs by the routing; 0.5% otherwise
# (per-sequence buffers the plan's per-token count leaves out).
acts, held = plan["memory_bytes"]["activations"], bench["activation_bytes"]
tolerance = 0.005 if plan["layout"]["ep"] == 1 else 0.1
if abs(acts - held) > tolerance * held:
    bad.append(f"activations: plan {acts} B, rank 0 held {held} B (more than {100 * tolerance:g}% apart)")
# A test that cannot fail is a defect: the layouts here all communicate.
if kinds < 3: bad.append(f"only {kinds} collective kinds used")
print(f"{name}: " + ("; ".join(bad) if bad else
      "equal: " + ", ".join(f"{k} {p['calls']}x {p['bytes']} B" for k, p in plan["comm_per_step"].items() if p["calls"]) +
      f"; state {state} B; activations {acts} B planned, {held} B held"))
sys.exit(1 if bad else 0)
PY
}
check 2 1 1
check 2 2 1
check 4 1 1
check 4 2 1
check 4 4 1
check 4 1 2
check 4 2 2
check 4 2 2 --set train.recompute=true
check 4 2 2 --set model.mtp_depth=2 --set train.recompute=true --set train.precision=fp8 --set parallel.fp8_dispatch=true
check 4 4 1 --set model.tie_embeddings=true --set model.mtp_depth=1
check 2 1 1 --set train.precision=bf16
check 2 2 1 --set train.precision=bf16 --set model.mtp_depth=1
check 2 2 1 --set train.precision=bf16 --set model.hidden=33
# Memory on this machine (issue 20's check 2): the plan's expected peak within 15% of the measured
# peak RSS of the demo's model (configs/shakespeare.yaml, one process). Not under the sanitizers,
# whose shadow memory is no part of the plan.
if [ -z "${ASAN_OPTIONS:-}${TSAN_OPTIONS:-}" ]; then
  "$MOE" bench train --config "$SRC/configs/shakespeare.yaml" --steps 2 --warmup 1 --threads 1 | tail -1 > "$TMP/bench.json"
  "$MOE" plan --config "$SRC/configs/shakespeare.yaml" --gpus 1 --gpu cpu --threads 1 --best 0 --json > "$TMP/plan.json"
  python3 - "$TMP/bench.json" "$TMP/plan.json" <<'PY' || fail "shakespeare: the plan's peak is not within 15% of the peak RSS"
import json, sys
bench, plan = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
peak, rss = plan["memory_bytes"]["peak"] / 2**20, bench["peak_rss_mib"]
print(f"shakespeare: plan peak {peak:.0f} MiB, measured peak RSS {rss:.0f} MiB ({100 * (peak - rss) / rss:+.1f}%); "
      f"state {plan['memory_bytes']['state']} B planned, {bench['state_bytes_per_rank']} B held")
sys.exit(0 if abs(peak - rss) <= 0.15 * rss and plan["memory_bytes"]["state"] == bench["state_bytes_per_rank"] else 1)
PY
fi

# Impossible requests are refused with what is wrong named.
refused() {  # refused <expected message part> <plan args...>
  local want=$1; shift
  if "$MOE" plan --config "$SRC/configs/tiny.yaml" "$@" > "$TMP/refused.out" 2>&1; then fail "plan $* was accepted"; fi
  grep -q -- "$want" "$TMP/refused.out" || { cat "$TMP/refused.out"; fail "plan $*: expected '$want'"; }
}
refused "ranks do not split into 3 replicas" --gpus 4 --gpu h100 --set parallel.dp_replicate=3 --best 0
refused "does not split into ep 4" --gpus 2 --gpu h100 --set parallel.ep=4 --best 0
refused "unknown device 'a100'" --gpus 2 --gpu a100
refused "--gpus: expected the number of devices" --gpu h100
refused "--gpus-per-node: expected >= 1, got 0" --gpus 2 --gpu h100 --gpus-per-node 0
refused "--best: expected >= 0, got -1" --gpus 2 --gpu h100 --best -1
refused "--global-batch: expected >= 1 sequences, got 0" --gpus 2 --gpu h100 --global-batch 0
refused "parallel.dp_replicate is 0 (expected > 0)" --gpus 2 --gpu h100 --set parallel.dp_replicate=0
# With the search (the default), a config layout that does not suit the device count is said and
# the layouts that do are listed.
"$MOE" plan --config "$SRC/configs/tiny.yaml" --gpus 4 --gpu h100 --set parallel.dp_replicate=3 > "$TMP/search.out"
grep -q "the config's layout: plan: 4 ranks do not split into 3 replicas" "$TMP/search.out" &&
  grep -q "^best layouts that fit" "$TMP/search.out" && [ "$(grep -cE '^  [0-9]+ +4 ' "$TMP/search.out")" -ge 1 ] ||
  { cat "$TMP/search.out"; fail "plan with an unsuitable config layout: no message or no search"; }
echo "plan.sh: all layouts equal"
