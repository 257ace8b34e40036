#!/usr/bin/env bash
# train.precision end to end on the tiny config: fp32, bf16 and fp8 runs from the same seed and data
# all learn, name their precision in the log, and end near each other; a checkpoint trained in one
# precision resumes in another (precision is not part of the model section).
# Usage: precision.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export MOE_NUM_THREADS=2

head -c 200000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" --val-fraction 0.1 > /dev/null
common=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=30
        --set train.eval_every=0 --set checkpoint.every=0)
for p in fp32 bf16 fp8; do
  "$MOE" train "${common[@]}" --set run.out_dir="$TMP/$p" --set train.precision=$p > "$TMP/$p.log"
  head -1 "$TMP/$p.log" | grep -q "| $p | " || fail "$p: the header does not name the precision"
done
python3 - "$TMP" <<'PY'
import json, sys, math
def losses(p):
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/{p}/metrics.jsonl")]
    return [r["loss"] for r in rows if "loss" in r], [r["val_loss"] for r in rows if "val_loss" in r][-1]
ref, ref_val = losses("fp32")
for p in ("bf16", "fp8"):
    l, val = losses(p)
    assert abs(l[0] - math.log(256)) < 0.3, (p, l[0])
    assert l[-1] < l[0] - 0.3, (p, l[0], l[-1])                 # it learns
    assert abs(val - ref_val) < 0.03 * ref_val, (p, val, ref_val)  # and ends near fp32
    print(f"{p}: final val loss {val:.4f} vs fp32 {ref_val:.4f}")
PY
# An fp32 checkpoint continues in fp8.
"$MOE" train "${common[@]}" --set run.out_dir="$TMP/fp32" --set train.steps=35 --set train.precision=fp8 > "$TMP/resume.log"
grep -q "resumed from .*step-00000030 at step 30" "$TMP/resume.log" || fail "fp8 did not resume the fp32 checkpoint"
echo "ok"
