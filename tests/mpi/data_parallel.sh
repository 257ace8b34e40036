#!/usr/bin/env bash
# Data parallelism over real MPI processes: `mpirun -np 2` with micro_batch 2 must train the same
# model as one process with micro_batch 4 (same global batch, same samples), to float round-off,
# and one process with grad_accum 2 must match too. Usage: data_parallel.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
common=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=8 --set train.eval_every=4
        --set checkpoint.every=0)

"$MOE" train "${common[@]}" --set run.out_dir="$TMP/one" --set train.micro_batch=4 > "$TMP/one.log"
"$MOE" train "${common[@]}" --set run.out_dir="$TMP/accum" --set train.micro_batch=2 --set train.grad_accum=2 > "$TMP/accum.log"
mpirun -np 2 "$MOE" train "${common[@]}" --set run.out_dir="$TMP/two" --set train.micro_batch=2 > "$TMP/two.log"
grep -q "2 rank(s)" "$TMP/two.log" || { echo "FAIL: mpirun did not give 2 ranks"; cat "$TMP/two.log"; exit 1; }

python3 - "$TMP/one/metrics.jsonl" "$TMP/accum/metrics.jsonl" "$TMP/two/metrics.jsonl" <<'PY'
import json, sys
runs = [[json.loads(l) for l in open(p)] for p in sys.argv[1:]]
ref = runs[0]
for other, name in zip(runs[1:], ("grad_accum 2", "mpirun -np 2")):
    assert len(other) == len(ref), (name, len(other), len(ref))
    for a, b in zip(ref, other):
        for key in ("loss", "grad_norm", "val_loss", "expert_load_max_mean"):
            if key in a:
                assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (name, a["step"], key, a[key], b[key])
print("ok: 1 rank x 4 == 1 rank x 2 x accum 2 == 2 ranks x 2, over", len(ref), "rows")
PY
# Both runs wrote the same final weights (rank 0 saves; every rank holds the full state).
"$MOE" eval --checkpoint "$TMP/one/checkpoints/latest" --data "$TMP/data" --json > "$TMP/e1"
"$MOE" eval --checkpoint "$TMP/two/checkpoints/latest" --data "$TMP/data" --json > "$TMP/e2"
python3 - "$TMP/e1" "$TMP/e2" <<'PY'
import json, sys
a, b = (json.loads(open(p).read()) for p in sys.argv[1:])
assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
PY
