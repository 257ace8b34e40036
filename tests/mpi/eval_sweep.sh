#!/usr/bin/env bash
# `moe eval` under mpirun: the windows are split across the ranks (each holds the whole model) and
# the sums are added in rank order, so np 2 and np 4 give np 1's rows within 1e-6 relative (loss,
# accuracy, expert load, counts), and rank 0 alone writes the results file.
# Usage: eval_sweep.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
"$MOE" train --config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set run.out_dir="$TMP/run" \
  --set train.steps=4 --set checkpoint.every=2 --set train.eval_every=0 > /dev/null
sweep=(eval --checkpoint "$TMP/run" --data a="$TMP/data" --data b="$TMP/data" --split train --batches 7 --micro-batch 3)
"$MOE" "${sweep[@]}" --out "$TMP/np1.jsonl" > /dev/null 2>&1
mpirun -np 2 "$MOE" "${sweep[@]}" --out "$TMP/np2.jsonl" > /dev/null 2>&1
mpirun -np 4 "$MOE" "${sweep[@]}" --out "$TMP/np4.jsonl" > /dev/null 2>&1
python3 - "$TMP"/np1.jsonl "$TMP"/np2.jsonl "$TMP"/np4.jsonl <<'PY'
import json, sys
ref = [json.loads(l) for l in open(sys.argv[1])]
assert len(ref) == 4, len(ref)   # 2 checkpoints x 2 datasets, each row written once
for path in sys.argv[2:]:
    rows = [json.loads(l) for l in open(path)]
    assert len(rows) == len(ref), (path, len(rows))
    for a, b in zip(ref, rows):
        assert b["ranks"] > 1 and a["ranks"] == 1
        assert a["windows"] == b["windows"] == 21 and a["tokens"] == b["tokens"], (a, b)
        for k in ("loss", "perplexity", "bits_per_byte", "top1", "top5", "expert_load_max_mean_worst"):
            assert abs(a[k] - b[k]) <= 1e-6 * abs(a[k]), (path, a["step"], k, a[k], b[k])
print("ok: np 2 and np 4 equal np 1 within 1e-6")
PY
