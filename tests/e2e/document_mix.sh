#!/usr/bin/env bash
# data.mix and data.document_mask end to end: a two-source mixture with document masks trains,
# logs per-source train and val losses, and a run stopped at step 8 and resumed equals one that
# never stopped, row for row; bad mixtures are one error line each, exit 2.
# Usage: document_mix.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export MOE_NUM_THREADS=1
# Two corpora of blank-line-separated documents (scenes and speeches of two parts of the play).
head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/a.txt"
tail -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/b.txt"
for s in a b; do
  "$MOE" preprocess --input "$TMP/$s.txt" --tokenizer byte --split-docs --output "$TMP/$s" > /dev/null
done
# A constant schedule: the trajectory does not depend on train.steps, so 8 steps resumed to 16
# can be compared with 16 uninterrupted ones.
args=(--config "$SRC/configs/tiny.yaml" --set 'data.path=""' --set data.document_mask=true
      --set "data.mix=[{path: $TMP/a, weight: 3}, {path: $TMP/b, weight: 1}]" --set train.schedule=constant
      --set train.warmup=2 --set train.eval_every=8 --set checkpoint.every=8 --set train.log_every=1)

"$MOE" train "${args[@]}" --set run.out_dir="$TMP/full" --set train.steps=16 > "$TMP/full.log"
"$MOE" train "${args[@]}" --set run.out_dir="$TMP/cut" --set train.steps=8 > /dev/null
"$MOE" train "${args[@]}" --set run.out_dir="$TMP/cut" --set train.steps=16 > "$TMP/resume.log"
grep -q "resumed from .* at step 8" "$TMP/resume.log" || fail "did not resume"
grep -q "^data: $TMP/a (a 75%, .*| document mask" "$TMP/full.log" || fail "no mixture header: $(grep ^data "$TMP/full.log")"
grep -q "^eval step 16 | val loss .* | a [0-9.]* | b [0-9.]*$" "$TMP/full.log" || fail "no per-source eval line"
python3 - "$TMP/full/metrics.jsonl" "$TMP/cut/metrics.jsonl" <<'PY'
import json, sys
full, cut = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
train = [r for r in full if "loss" in r]
evals = [r for r in full if "val_loss" in r]
assert len(train) == 16 and len(evals) == 2, (len(train), len(evals))
for r in train:
    assert set(r["source_loss"]) == {"a", "b"}, r["source_loss"]
seen = {k: sum(r["source_loss"][k] is not None for r in train) for k in "ab"}
assert seen["a"] == 16 and seen["b"] >= 4, seen  # weight 3:1, 4 windows a step
for r in evals:
    v = r["val_source_loss"]
    assert set(v) == {"a", "b"}, v
    assert abs(r["val_loss"] - (3 * v["a"] + v["b"]) / 4) < 1e-12, r  # the weighted mean
# The resumed run saw the same batches: every row equal, bit for bit.
keys = ("step", "loss", "source_loss", "grad_norm", "val_loss", "val_source_loss")
pick = lambda rows: [{k: r[k] for k in keys if k in r} for r in rows]
assert pick(full) == pick(cut), "resumed run differs"
PY
# The mask is in effect: the first step's loss differs without it (same weights, same windows).
"$MOE" train "${args[@]}" --set run.out_dir="$TMP/nomask" --set train.steps=2 --set data.document_mask=false > "$TMP/nomask.log"
a=$(grep -o "^step      1/16 | loss [0-9.]*" "$TMP/full.log"); b=$(grep -o "^step      1/2 | loss [0-9.]*" "$TMP/nomask.log")
[ "${a##* }" != "${b##* }" ] || fail "document_mask did not change the loss (${a##* })"

# Bad mixtures: one line naming the entry, exit 2.
expect_error() {
  local pattern=$1; shift
  local rc=0
  timeout 60 "$@" > "$TMP/out" 2> "$TMP/err" || rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l < "$TMP/err")" -eq 1 ] && grep -q "^error: .*$pattern" "$TMP/err" ||
    fail "rc=$rc, expected 'error: ...$pattern', got: $(cat "$TMP/err")"
}
bad=(--config "$SRC/configs/tiny.yaml" --set 'data.path=""' --set run.out_dir="$TMP/bad")
expect_error "data.mix\[1\].weight is 0 for $TMP/b (expected a weight > 0)" "$MOE" train "${bad[@]}" \
  --set "data.mix=[{path: $TMP/a, weight: 1}, {path: $TMP/b, weight: 0}]"
expect_error "data.mix\[0\].weight is -1" "$MOE" train "${bad[@]}" --set "data.mix=[{path: $TMP/a, weight: -1}]"
expect_error "data.mix\[1\]: $TMP/missing: no such data folder" "$MOE" train "${bad[@]}" \
  --set "data.mix=[{path: $TMP/a, weight: 1}, {path: $TMP/missing, weight: 1}]"
expect_error "data.path and data.mix are both set" "$MOE" train --config "$SRC/configs/tiny.yaml" \
  --set "data.mix=[{path: $TMP/a, weight: 1}]"
cp -r "$TMP/b" "$TMP/other"
sed -i 's/"tokenizer_hash": *"[0-9a-f]*"/"tokenizer_hash": "0123456789abcdef"/' "$TMP/other/val/manifest.json"
expect_error "other/val/manifest.json: data.mix\[1\]: tokenizer 'byte' (hash 0123456789ab) differs from .*/a/train's" \
  "$MOE" train "${bad[@]}" --set "data.mix=[{path: $TMP/a, weight: 1}, {path: $TMP/other, weight: 1}]"
echo ok
