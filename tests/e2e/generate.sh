#!/usr/bin/env bash
# moe generate on a tiny trained checkpoint: batched prompts from a file (plain lines and JSONL with
# per-prompt settings), a prompt's text the same alone and in a batch, the KV cache against the
# no-cache path, stop strings, the context limit, and bad input (one clear line, exit 2).
# Usage: generate.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export MOE_NUM_THREADS=2

head -c 100000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" --val-fraction 0.1 > /dev/null
"$MOE" train --config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set run.out_dir="$TMP/run" \
  --set train.steps=30 --set train.eval_every=0 --set data.seq_len=64 > /dev/null
CK="$TMP/run/checkpoints/latest"

# A batch from a plain file: one JSON line per prompt, in order, each max-tokens long.
printf 'ROMEO:\n\nJULIET:\nFirst Citizen:\n' > "$TMP/prompts.txt"
"$MOE" generate --checkpoint "$CK" --prompts "$TMP/prompts.txt" --max-tokens 24 --seed 5 --top-k 8 --no-eos-stop \
  --batch 2 > "$TMP/batch.jsonl"
"$MOE" generate --checkpoint "$CK" --prompt "JULIET:" --max-tokens 24 --seed 5 --top-k 8 --no-eos-stop > "$TMP/alone.txt"
"$MOE" generate --checkpoint "$CK" --prompts "$TMP/prompts.txt" --max-tokens 24 --seed 5 --top-k 8 --no-eos-stop \
  --no-cache > "$TMP/nocache.jsonl"
/usr/bin/python3 - "$TMP/batch.jsonl" "$TMP/alone.txt" "$TMP/nocache.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["index"] for r in rows] == [0, 1, 2], rows
assert [r["prompt"] for r in rows] == ["ROMEO:", "JULIET:", "First Citizen:"], rows
for r in rows:
    assert r["finish_reason"] == "length" and r["completion_tokens"] == 24 and len(r["text"].encode()) == 24, r
alone = open(sys.argv[2], encoding="utf-8").read()
assert alone == "JULIET:" + rows[1]["text"] + "\n", (alone, rows[1])   # batch composition does not matter
nocache = [json.loads(l) for l in open(sys.argv[3])]
assert [r["text"] for r in nocache] == [r["text"] for r in rows], (nocache, rows)
PY

# JSONL: per-prompt settings; a stop string ends the text before it.
first=$(/usr/bin/python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['text'][3:5])" "$TMP/batch.jsonl")
/usr/bin/python3 - "$TMP/p.jsonl" "$first" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    f.write(json.dumps({"prompt": "ROMEO:", "seed": 5, "top_k": 8, "max_tokens": 24, "stop": sys.argv[2]}) + "\n")
    f.write(json.dumps({"prompt": "KING:", "max_tokens": 3, "temperature": 0}) + "\n")
PY
"$MOE" generate --checkpoint "$CK" --prompts "$TMP/p.jsonl" --no-eos-stop > "$TMP/p.out"
/usr/bin/python3 - "$TMP/p.out" "$TMP/batch.jsonl" "$first" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
full = json.loads(open(sys.argv[2]).readline())["text"]
stop = sys.argv[3]
assert rows[0]["finish_reason"] == "stop" and rows[0]["text"] == full[:full.index(stop)], (rows[0], full, stop)
assert rows[1]["finish_reason"] == "length" and rows[1]["completion_tokens"] == 3, rows[1]
PY

# Other precisions run; a sliding window goes past the context (tiny: seq_len 64).
"$MOE" generate --checkpoint "$CK" --prompt "A" --max-tokens 8 --precision bf16 > /dev/null || fail "bf16"
"$MOE" generate --checkpoint "$CK" --prompt "A" --max-tokens 8 --precision fp8 > /dev/null || fail "fp8"
"$MOE" generate --checkpoint "$CK" --prompt "A" --max-tokens 150 --sliding-window --no-eos-stop > "$TMP/long.txt"
[ "$(wc -c < "$TMP/long.txt")" -ge 150 ] || fail "the sliding window stopped early"

# Bad input.
expect_error() {
  local pattern=$1; shift
  set +e; "$@" > /dev/null 2> "$TMP/err"; local rc=$?; set -e
  [ $rc -eq 2 ] && [ "$(wc -l < "$TMP/err")" -eq 1 ] && grep -q "^error: .*$pattern" "$TMP/err" ||
    fail "expected exit 2 and 'error: ...$pattern' from: $* (rc=$rc: $(cat "$TMP/err"))"
}
: > "$TMP/empty.txt"
expect_error "empty.txt: no prompts" "$MOE" generate --checkpoint "$CK" --prompts "$TMP/empty.txt"
printf '{"prompt": "a"}\n{"prompt": \n' > "$TMP/bad.jsonl"
expect_error "bad.jsonl:2: not a JSON object" "$MOE" generate --checkpoint "$CK" --prompts "$TMP/bad.jsonl"
printf '{"prompt": "a", "temprature": 1}\n' > "$TMP/key.jsonl"
expect_error "key.jsonl:1: unknown key 'temprature'" "$MOE" generate --checkpoint "$CK" --prompts "$TMP/key.jsonl"
printf '{"prompt": "a", "top_p": 0}\n' > "$TMP/topp.jsonl"
expect_error "topp.jsonl:1: top_p: 0" "$MOE" generate --checkpoint "$CK" --prompts "$TMP/topp.jsonl"
expect_error "no-such.txt: cannot read the prompts file" "$MOE" generate --checkpoint "$CK" --prompts "$TMP/no-such.txt"
expect_error "exceeds the model's context of 64 tokens" "$MOE" generate --checkpoint "$CK" --prompt "ROMEO:" --max-tokens 60
expect_error "give --prompt TEXT or --prompts FILE" "$MOE" generate --checkpoint "$CK" --prompt a --prompts "$TMP/prompts.txt"
expect_error "--batch: 0" "$MOE" generate --checkpoint "$CK" --prompt a --batch 0
expect_error "--precision: 'fp16'" "$MOE" generate --checkpoint "$CK" --prompt a --precision fp16
expect_error "--stop: an empty string" "$MOE" generate --checkpoint "$CK" --prompt a --stop ""
echo "ok"
