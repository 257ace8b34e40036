#!/usr/bin/env bash
# A SIGTERM (what SLURM sends at the time limit) saves a checkpoint at the next step boundary and
# exits 0; running the same command again resumes from it and reaches the same final weights as a
# run that was never interrupted. Usage: stop_and_resume.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export MOE_NUM_THREADS=1
head -c 100000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" > /dev/null
# A constant schedule makes the trajectory independent of train.steps, so a long run stopped at
# step k and resumed to k+20 can be compared with a run of k+20 steps that was never stopped.
args=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.schedule=constant
      --set train.warmup=2 --set train.eval_every=0 --set checkpoint.every=0 --set train.log_every=1)

"$MOE" train "${args[@]}" --set run.out_dir="$TMP/cut" --set train.steps=1000000 > "$TMP/cut.log" &
pid=$!
for _ in $(seq 1 600); do grep -q "^step " "$TMP/cut.log" 2>/dev/null && break; sleep 0.05; done
kill -TERM $pid
wait $pid || fail "a stop on SIGTERM should exit 0 (got $?)"
grep -q "stopping on signal 15" "$TMP/cut.log" || fail "no stop message"
ckpt=$(ls "$TMP/cut/checkpoints" | grep '^step-[0-9]*$' | tail -1)
[ -n "$ckpt" ] || fail "no checkpoint after SIGTERM"
k=$((10#${ckpt#step-}))
total=$((k + 20))

"$MOE" train "${args[@]}" --set run.out_dir="$TMP/cut" --set train.steps=$total > "$TMP/resume.log"
grep -q "resumed from .*$ckpt at step $k" "$TMP/resume.log" || fail "did not resume from $ckpt"
"$MOE" train "${args[@]}" --set run.out_dir="$TMP/full" --set train.steps=$total > /dev/null

# Same final weights, bit for bit: the resume restored weights, moments, step and data order.
"$MOE" eval --checkpoint "$TMP/full/checkpoints/latest" --data "$TMP/data" --json > "$TMP/a.json"
"$MOE" eval --checkpoint "$TMP/cut/checkpoints/latest" --data "$TMP/data" --json > "$TMP/b.json"
python3 - "$TMP/a.json" "$TMP/b.json" <<'PY'
import json, sys
a, b = (json.loads(open(p).read()) for p in sys.argv[1:])
assert a["step"] == b["step"], (a, b)
assert a["loss"] == b["loss"], ("resumed run differs", a["loss"], b["loss"])
PY
echo ok
