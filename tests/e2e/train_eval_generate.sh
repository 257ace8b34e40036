#!/usr/bin/env bash
# End to end on the tiny config: preprocess -> train (with a checkpoint and a resume) -> eval ->
# generate -> inspect. Usage: train_eval_generate.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export MOE_NUM_THREADS=2

head -c 200000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" --val-fraction 0.1 > /dev/null

common=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set run.out_dir="$TMP/run"
        --set train.eval_every=10 --set checkpoint.every=10)
"$MOE" train "${common[@]}" --set train.steps=20 > "$TMP/train1.log"
grep -q "^step     20/20" "$TMP/train1.log" || fail "no step-20 log line"
grep -q "^eval step 20" "$TMP/train1.log" || fail "no eval line"
[ -d "$TMP/run/checkpoints/step-00000020" ] || fail "no step-20 checkpoint"
[ -L "$TMP/run/checkpoints/latest" ] || fail "no latest link"
# One JSON object per logged step plus the evals, each with the keys plots need.
[ "$(grep -c '"tokens_per_s"' "$TMP/run/metrics.jsonl")" = 20 ] || fail "metrics.jsonl should have 20 step rows"
grep -q '"val_loss"' "$TMP/run/metrics.jsonl" || fail "metrics.jsonl has no val_loss"
python3 - "$TMP/run/metrics.jsonl" <<'PY'
import json, sys, math
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if "loss" in r]
for k in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_rss_mib", "expert_load_max_mean"):
    assert all(k in r for r in steps), k
first, last = steps[0]["loss"], steps[-1]["loss"]
assert abs(first - math.log(256)) < 0.3, first       # a fresh model is uniform over bytes
assert last < first - 0.3, (first, last)             # and it learns
PY

# Resume: asking for 30 steps continues from the step-20 checkpoint.
"$MOE" train "${common[@]}" --set train.steps=30 > "$TMP/train2.log"
grep -q "resumed from .*step-00000020 at step 20" "$TMP/train2.log" || fail "did not resume"
grep -q "^step     30/30" "$TMP/train2.log" || fail "resumed run did not reach step 30"
# keep_last: 2 in tiny.yaml -> steps 20 and 30 remain, 10 is gone.
[ ! -d "$TMP/run/checkpoints/step-00000010" ] || fail "retention kept step 10"

# eval over the checkpoints folder: one JSON line per checkpoint with the contract's keys.
"$MOE" eval --checkpoint "$TMP/run/checkpoints" --data "$TMP/data" --json > "$TMP/eval.json"
[ "$(wc -l < "$TMP/eval.json")" = 2 ] || fail "eval should print 2 lines"
python3 - "$TMP/eval.json" <<'PY'
import json, sys, math
for line in open(sys.argv[1]):
    r = json.loads(line)
    assert set(("step", "loss", "perplexity", "bits_per_byte", "tokens")) <= set(r), r
    assert abs(r["perplexity"] - math.exp(r["loss"])) < 1e-3 * r["perplexity"]
    assert abs(r["bits_per_byte"] - r["loss"] / math.log(2)) < 1e-4   # byte tokenizer: 1 token = 1 byte
    assert r["tokens"] > 0 and r["loss"] < math.log(256)
PY

# generate: streams the prompt and max-tokens bytes; same seed, same text.
"$MOE" generate --checkpoint "$TMP/run/checkpoints/latest" --prompt "ROMEO:" --max-tokens 24 --seed 3 > "$TMP/g1.txt"
"$MOE" generate --checkpoint "$TMP/run/checkpoints" --prompt "ROMEO:" --max-tokens 24 --seed 3 > "$TMP/g2.txt"
cmp -s "$TMP/g1.txt" "$TMP/g2.txt" || fail "generation is not deterministic for a fixed seed"
head -c 6 "$TMP/g1.txt" | grep -q "ROMEO:" || fail "generation does not start with the prompt"
[ "$(wc -c < "$TMP/g1.txt")" -ge 20 ] || fail "generation too short"

"$MOE" inspect "$TMP/run/checkpoints/latest" > /dev/null || fail "inspect checkpoint"
"$MOE" inspect "$TMP/data" > /dev/null || fail "inspect shards"
# A corpus without a validation split trains, and says evaluation is skipped.
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/noval" --val-fraction 0 > /dev/null
"$MOE" train --config "$SRC/configs/tiny.yaml" --set data.path="$TMP/noval" --set run.out_dir="$TMP/run-noval" \
  --set train.steps=2 > "$TMP/noval.log" || fail "training without a val split"
grep -q "evaluation is skipped" "$TMP/noval.log" || fail "no warning about the missing val split"
echo "ok"
