#!/usr/bin/env bash
# data.mix with data.document_mask over real MPI processes: `mpirun -np 2` with micro_batch 2 trains
# like one process with micro_batch 4 (the mixture is a function of the global sample index), and
# the per-source losses, summed over ranks, agree. Usage: mixture.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
tail -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/b.txt"
"$MOE" preprocess --input "$TMP/b.txt" --tokenizer byte --split-docs --output "$TMP/b" > /dev/null
common=(--config "$SRC/configs/tiny.yaml" --set 'data.path=""' --set data.document_mask=true
        --set "data.mix=[{path: $TMP/data, weight: 1}, {path: $TMP/b, weight: 1}]" --set train.steps=8
        --set train.eval_every=4 --set checkpoint.every=0 --set train.log_every=1)

"$MOE" train "${common[@]}" --set run.out_dir="$TMP/one" --set train.micro_batch=4 > "$TMP/one.log"
mpirun -np 2 "$MOE" train "${common[@]}" --set run.out_dir="$TMP/two" --set train.micro_batch=2 > "$TMP/two.log"
grep -q "2 rank(s)" "$TMP/two.log" || { echo "FAIL: mpirun did not give 2 ranks"; cat "$TMP/two.log"; exit 1; }

python3 - "$TMP/one/metrics.jsonl" "$TMP/two/metrics.jsonl" <<'PY'
import json, sys
# Step and eval rows (the expert reports' rows are not compared here).
one, two = ([r for r in map(json.loads, open(p)) if "expert_counts" not in r] for p in sys.argv[1:])
assert len(one) == len(two) == 10, (len(one), len(two))
close = lambda a, b: (a is None and b is None) or abs(a - b) <= 1e-4 * max(1.0, abs(a))
for a, b in zip(one, two):
    for key in ("loss", "grad_norm", "val_loss"):
        if key in a:
            assert close(a[key], b[key]), (a["step"], key, a[key], b[key])
    for key in ("source_loss", "val_source_loss"):
        if key in a:
            assert a[key].keys() == b[key].keys() == {"data", "b"}, (a[key], b[key])
            for s in a[key]:
                assert close(a[key][s], b[key][s]), (a["step"], key, s, a[key][s], b[key][s])
print("ok: mixture 1 rank x 4 == 2 ranks x 2, per-source losses too, over", len(one), "rows")
PY
