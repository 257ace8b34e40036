#!/usr/bin/env bash
# `moe eval` sweeps: 2 checkpoints x 2 datasets into a results file; the same sweep again skips
# everything; a sweep killed with kill -9 at random moments and restarted ends with the same file as
# one that never stopped (timings aside); --format table|markdown|csv; --watch beside a training
# run; bad input (missing folder, another tokenizer, a corrupt and a half-written checkpoint, an
# --out of other settings, a repeated flag). Usage: eval_sweep.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
fail() { echo "FAIL: $*" >&2; exit 1; }
tail -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/other.txt"
"$MOE" preprocess --input "$TMP/other.txt" --tokenizer byte --output "$TMP/other" > /dev/null
tiny=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set checkpoint.keep_last=0)
"$MOE" train "${tiny[@]}" --set run.out_dir="$TMP/run" --set train.steps=4 --set checkpoint.every=2 \
  --set train.eval_every=0 > /dev/null
sweep=(eval --checkpoint "$TMP/run" --data shakespeare="$TMP/data" --data "$TMP/other" --micro-batch 1)

# Reference: 2 checkpoints x 2 datasets, one row each with the contract's keys.
"$MOE" "${sweep[@]}" --out "$TMP/ref.jsonl" > "$TMP/table.txt" 2> "$TMP/err"
grep -q "found 2 checkpoints (0 unreadable: skipped) x 2 datasets: 4 rows to evaluate, 0 already" "$TMP/err" \
  || fail "no found/skipped line: $(cat "$TMP/err")"
grep -q "^run  *step  *shakespeare/val loss (top-1)  *other/val loss (top-1)" "$TMP/table.txt" || fail "no matrix"
grep -q "^run  *4 " "$TMP/table.txt" || fail "matrix is not at the latest step"
python3 - "$TMP/ref.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [(r["step"], r["dataset"]) for r in rows] == [(2, "shakespeare"), (2, "other"), (4, "shakespeare"), (4, "other")], rows
for r in rows:
    for k in ("run", "checkpoint", "step", "tokens_seen", "checksum", "dataset", "split", "loss", "perplexity",
              "bits_per_byte", "top1", "top5", "tokens", "expert_load_max_mean", "expert_load_max_mean_worst",
              "seconds", "windows_per_s", "batches", "precision"):
        assert k in r, k
    assert r["run"] == "run" and r["split"] == "val" and r["precision"] == "fp32"
    assert r["tokens_seen"] == r["step"] * 4 * 32
    assert abs(r["perplexity"] - math.exp(r["loss"])) < 1e-9 * r["perplexity"]
    assert abs(r["bits_per_byte"] - r["loss"] / math.log(2)) < 1e-9   # byte tokenizer
    assert 0 <= r["top1"] <= r["top5"] <= 1 and r["top5"] > 0
    assert len(r["expert_load_max_mean"]) == 1 and 1 <= r["expert_load_max_mean_worst"] <= 4
PY

# The same sweep again: nothing to do, the file unchanged, the rows still printed.
cp "$TMP/ref.jsonl" "$TMP/before"
"$MOE" "${sweep[@]}" --out "$TMP/ref.jsonl" --json > "$TMP/again.json" 2> "$TMP/err"
cmp -s "$TMP/before" "$TMP/ref.jsonl" || fail "a finished sweep changed its results file"
grep -q "0 rows to evaluate, 4 already in" "$TMP/err" || fail "did not skip: $(cat "$TMP/err")"
[ "$(wc -l < "$TMP/again.json")" = 4 ] || fail "--json should print the 4 rows"
"$MOE" "${sweep[@]}" --out "$TMP/ref.jsonl" --format markdown 2> /dev/null | grep -q "^| run | step | tokens_seen |" \
  || fail "no markdown long table"
"$MOE" "${sweep[@]}" --out "$TMP/ref.jsonl" --format csv 2> /dev/null | head -1 | grep -q "^run,step,tokens_seen," \
  || fail "no csv header"

# Killed (kill -9) as soon as it has added a row (so in the middle of the next one), restarted, and
# so on: the same rows as the reference in the end. After the first kill a torn line is appended,
# as from a kill inside the write; the next run drops it with a note.
lines() { if [ -f "$TMP/killed.jsonl" ]; then wc -l < "$TMP/killed.jsonl"; else echo 0; fi; }
kills=0
for run in 1 2 3; do
  before=$(lines)
  "$MOE" "${sweep[@]}" --out "$TMP/killed.jsonl" > /dev/null 2> "$TMP/kill$run.err" &
  pid=$!
  while kill -0 "$pid" 2> /dev/null && [ "$(lines)" -le "$before" ]; do sleep 0.005; done
  if kill -9 "$pid" 2> /dev/null; then kills=$((kills + 1)); fi
  wait "$pid" 2> /dev/null || true
  if [ "$run" = 1 ]; then printf '{"run": "run", "checkpoint": "' >> "$TMP/killed.jsonl"; fi
done
"$MOE" "${sweep[@]}" --out "$TMP/killed.jsonl" > /dev/null 2> "$TMP/kill.err" || fail "resumed sweep failed"
[ "$kills" -ge 1 ] || fail "the sweep was never killed"
grep -q "^note: dropped a torn last line of .*killed.jsonl" "$TMP/kill2.err" || fail "no note on the torn line"
python3 - "$TMP/ref.jsonl" "$TMP/killed.jsonl" <<'PY'
import json, sys
strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "windows_per_s")}
ref, got = ([strip(json.loads(l)) for l in open(p)] for p in sys.argv[1:])
assert got == ref, (len(got), len(ref))
PY

# --watch beside a training job: evaluates each checkpoint as it is committed, ends after the last step.
"$MOE" train "${tiny[@]}" --set run.out_dir="$TMP/live" --set train.steps=6 --set checkpoint.every=2 \
  --set train.eval_every=0 > /dev/null &
train_pid=$!
timeout 120 "$MOE" eval --checkpoint "$TMP/live" --data "$TMP/data" --batches 2 --watch --poll 0.1 --json \
  > "$TMP/watch.json" 2> "$TMP/watch.err" || fail "--watch failed or did not end: $(cat "$TMP/watch.err")"
wait "$train_pid" || fail "training beside --watch failed"
python3 - "$TMP/watch.json" <<'PY'
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1])]
assert steps == [2, 4, 6], steps
PY

# Bad input: one "error:" line, exit 2, the results file untouched.
expect_error() {
  local pattern=$1; shift
  local rc=0
  "$@" > "$TMP/out" 2> "$TMP/err" || rc=$?
  [ $rc = 2 ] && [ "$(wc -l < "$TMP/err")" = 1 ] && grep -q "^error: .*$pattern" "$TMP/err" \
    || fail "expected exit 2 and 'error: ...$pattern' from $*; got rc=$rc: $(cat "$TMP/err")"
}
cp "$TMP/ref.jsonl" "$TMP/before"
expect_error "$TMP/nope: no such data folder" "$MOE" eval --checkpoint "$TMP/run" --data "$TMP/nope"
expect_error "$TMP/nope: no such checkpoint or folder" "$MOE" eval --checkpoint "$TMP/nope" --data "$TMP/data"
expect_error "--split given twice ('val' and 'train')" "$MOE" eval --checkpoint "$TMP/run" --data "$TMP/data" --split val --split train
expect_error "--data: two datasets are named 'data'" "$MOE" eval --checkpoint "$TMP/run" --data "$TMP/data" --data "$TMP/data"
expect_error "ref.jsonl:1: step 2 on shakespeare/val was evaluated with batches 0.*this sweep uses batches 3" \
  "$MOE" "${sweep[@]}" --out "$TMP/ref.jsonl" --batches 3
expect_error "precision fp32, this sweep uses .*precision bf16" "$MOE" "${sweep[@]}" --out "$TMP/ref.jsonl" --precision bf16
cmp -s "$TMP/before" "$TMP/ref.jsonl" || fail "a refused sweep changed the results file"
"$MOE" tokenizer train --input "$TMP/corpus.txt" --vocab-size 300 --output "$TMP/bpe.json" > /dev/null
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer "$TMP/bpe.json" --output "$TMP/bpe" > /dev/null
expect_error "$TMP/bpe/val: tokenized with .*bpe.json' but .*step-00000002 was trained on 'byte'" \
  "$MOE" eval --checkpoint "$TMP/run" --data "$TMP/bpe"

# A corrupt checkpoint and a half-written one are skipped with a warning naming them; the rest runs.
cp -r "$TMP/run/checkpoints/step-00000004" "$TMP/run/checkpoints/step-00000006"
printf 'XXXX' | dd of="$TMP/run/checkpoints/step-00000006/state.h5" bs=1 seek=5000 conv=notrunc 2> /dev/null
sed -i 's/"step": 4/"step": 6/' "$TMP/run/checkpoints/step-00000006/COMMITTED"  # a new checkpoint, not a copy
mkdir "$TMP/run/checkpoints/step-00000008" && cp "$TMP/run/checkpoints/step-00000004/state.h5" "$TMP/run/checkpoints/step-00000008/"
"$MOE" "${sweep[@]}" --out "$TMP/ref.jsonl" --json > "$TMP/out" 2> "$TMP/err" || fail "a bad checkpoint stopped the sweep"
grep -q "^warning: skipping checkpoint .*step-00000006: .*" "$TMP/err" || fail "no warning for the corrupt checkpoint: $(cat "$TMP/err")"
grep -q "^warning: skipping checkpoint .*step-00000008: not committed" "$TMP/err" || fail "no warning for the half-written one"
grep -q "4 checkpoints found; 0 rows evaluated, 4 skipped (already in .*), 2 checkpoints skipped" "$TMP/err" \
  || fail "counts: $(cat "$TMP/err")"
cmp -s "$TMP/before" "$TMP/ref.jsonl" || fail "skipped checkpoints changed the results file"
echo "ok"
