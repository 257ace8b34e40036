#!/usr/bin/env bash
# HSDP (parallel.dp_replicate, parallel/mesh.h): np 4 as 2 replicas of 2 ranks, with ep 1 and ep 2.
#   - 20 steps of configs/tiny.yaml give the single-process run's per-step losses and grad norms to
#     1e-5 relative and its final parameters and AdamW moments to 1e-5 (as fsdp_expert_parallel.sh)
#   - each rank keeps about 1/2 of the state (its replica's share), not 1/4
#   - gradients are reduce-scattered inside a replica and all-reduced across replicas: all-gather
#     bytes are still twice the reduce-scatter bytes, at a group of 2 instead of 4, and the step's
#     all-reduces carry a shard-sized buffer on top of the host sums
#   - the checkpoint is written once, by replica 0, and reshards both ways: an HSDP checkpoint
#     continues as plain FSDP (np 2) and a plain FSDP checkpoint continues as HSDP, each ending
#     where the single process ends
#   - impossible layouts are refused with the key named
# Usage: hsdp.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
# Global batch 4 sequences in every layout: micro_batch 1 x grad_accum (4 / np) x np ranks.
common=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=20 --set train.eval_every=10
        --set checkpoint.every=10 --set checkpoint.keep_last=0 --set train.micro_batch=1)
fail() { echo "FAIL: $*"; exit 1; }
run() {  # run <np> <ep> <dp_replicate> <out_dir> [more --set ...]
  local np=$1 ep=$2 r=$3 out=$4; shift 4
  timeout 120 mpirun -np "$np" "$MOE" train "${common[@]}" --set run.out_dir="$out" --set parallel.ep="$ep" \
    --set parallel.dp_replicate="$r" --set train.grad_accum=$((4 / np)) --set run.rank_logs=true "$@" > "$out.log" 2>&1 ||
    { cat "$out.log"; fail "np $np ep $ep dp_replicate $r"; }
}
compare() {  # compare <reference run> <run> <step>
  "$MOE" inspect "$1/checkpoints/step-$(printf %08d "$3")" --compare "$2/checkpoints/step-$(printf %08d "$3")" \
    --tolerance 1e-5 > "$2.cmp" || { sort -k6 -g "$2.cmp" | tail -5; fail "$2: state at step $3 differs from $1"; }
  echo "$(basename "$2") vs $(basename "$1") at step $3: $(tail -1 "$2.cmp")"
}

"$MOE" train "${common[@]}" --set run.out_dir="$TMP/np1" --set train.grad_accum=4 > "$TMP/np1.log"
for ep in 1 2; do
  run 4 "$ep" 2 "$TMP/hsdp_ep$ep"
  grep -q "4 rank(s) (2 replicas (HSDP) x dp $((2 / ep)) x ep $ep)" "$TMP/hsdp_ep$ep.log" ||
    { cat "$TMP/hsdp_ep$ep.log"; fail "ep $ep: layout line"; }
  grep -q "^step 20 | rank 3 (replica 1, dp $(((1) / ep)), ep $((1 % ep)))" "$TMP/hsdp_ep$ep/logs/rank-3.log" ||
    { cat "$TMP/hsdp_ep$ep/logs/rank-3.log"; fail "ep $ep: rank 3's log"; }
  compare "$TMP/np1" "$TMP/hsdp_ep$ep" 20
done
# Plain FSDP over the 4 ranks, for the communication and memory comparison.
run 4 1 1 "$TMP/fsdp4"

python3 - "$TMP" "$(dirname "$0")" <<'PY'
import json, os, sys
tmp = sys.argv[1]
sys.path.insert(0, sys.argv[2])
from same_losses import load as same_losses_load, worst_difference
load = lambda name: same_losses_load(os.path.join(tmp, name))
ref = load("np1")
last = lambda name: [r for r in load(name) if "state_fraction" in r][-1]
for name in ("hsdp_ep1", "hsdp_ep2"):
    rows = load(name)
    worst = worst_difference(ref, rows, name)
    t = last(name)
    # Half of the state per rank (a replica of 2 shards it), plus at most 10% (padding, router biases).
    assert 0.5 <= t["state_fraction"] <= 1.1 / 2, (name, t["state_fraction"])
    comm = t["comm"]
    rs, ag, ar = comm["reduce_scatter"], comm["all_gather"], comm["all_reduce"]
    assert ag["bytes"] == 2 * rs["bytes"] and ag["calls"] == 2 * rs["calls"], (name, comm)
    print(f"{name}: worst relative loss/grad-norm difference {worst:.2e}; state per rank {t['state_fraction']:.4f} "
          f"of one process; per step all-gather {ag['bytes'] / 2**20:.3f} MiB, reduce-scatter "
          f"{rs['bytes'] / 2**20:.3f} MiB, all-reduce {ar['bytes'] / 2**20:.3f} MiB in {ar['calls']} calls")
f4, h1 = last("fsdp4"), last("hsdp_ep1")
# The same model and batch: FSDP over 4 gathers units of 4 shards; HSDP over replicas of 2 gathers
# units of 2 shards of twice the size, so the gathered bytes match; HSDP adds one all-reduce of its
# shard-sized gradients, about half the model's f32 bytes (a 2-rank shard) over the replicas.
assert abs(h1["comm"]["all_gather"]["bytes"] - f4["comm"]["all_gather"]["bytes"]) <= 0.02 * f4["comm"]["all_gather"]["bytes"], (h1["comm"], f4["comm"])
extra = h1["comm"]["all_reduce"]["bytes"] - f4["comm"]["all_reduce"]["bytes"]
assert extra > 0 and h1["comm"]["all_reduce"]["calls"] > f4["comm"]["all_reduce"]["calls"], (h1["comm"], f4["comm"])
assert f4["state_fraction"] <= 1.1 / 4 < h1["state_fraction"], (f4["state_fraction"], h1["state_fraction"])
print(f"fsdp np4: state per rank {f4['state_fraction']:.4f}; HSDP's cross-replica all-reduce adds "
      f"{extra / 2**20:.3f} MiB per step")
PY

# The checkpoint is written once: replica 0's two ranks, one state.h5 holding whole logical tensors.
python3 - "$TMP/hsdp_ep2/checkpoints/step-00000020/meta.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
assert m["world_size"] == 4 and m["expert_parallel"] == 2, m
PY

# Resharding both ways, from step 10: HSDP (np 4, ep 2, 2 replicas) -> FSDP (np 2, ep 1), and
# FSDP (np 2, ep 2) -> HSDP (np 4, ep 1, 2 replicas). Each ends at the single process's step 20.
continue_from() {  # continue_from <saved run> <new run dir> <np> <ep> <dp_replicate>
  local out=$2
  mkdir -p "$out/checkpoints"
  cp -r "$1/checkpoints/step-00000010" "$out/checkpoints/"
  ln -s step-00000010 "$out/checkpoints/latest"
  run "$3" "$4" "$5" "$out"
  grep -q "resumed from .*step-00000010 at step 10" "$out.log" || { cat "$out.log"; fail "$out did not resume"; }
  compare "$TMP/np1" "$out" 20
}
continue_from "$TMP/hsdp_ep2" "$TMP/to_fsdp" 2 1 1
run 2 2 1 "$TMP/fsdp2"
continue_from "$TMP/fsdp2" "$TMP/to_hsdp" 4 1 2

# Impossible layouts: the key, exit 2, before any step.
for bad in "4 1 3 parallel.dp_replicate 3 does not divide world size 4" \
           "4 4 2 parallel.ep 4 does not divide the 2 ranks of a replica"; do
  set -- $bad
  want="${*:4}"
  if timeout 60 mpirun -np "$1" "$MOE" train "${common[@]}" --set run.out_dir="$TMP/bad" --set parallel.ep="$2" \
      --set parallel.dp_replicate="$3" > "$TMP/bad.log" 2>&1; then
    cat "$TMP/bad.log"; fail "np $1 ep $2 dp_replicate $3 was accepted"
  fi
  grep -q "^error: .*$want" "$TMP/bad.log" || { cat "$TMP/bad.log"; fail "np $1 ep $2 dp_replicate $3: no clear message"; }
  ! grep -q "^step " "$TMP/bad.log" || fail "np $1 ep $2 dp_replicate $3 trained before refusing"
done
echo "ok: HSDP matches one process, keeps 1/2 of the state per rank, saves once and reshards both ways"
