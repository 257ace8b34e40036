#!/usr/bin/env bash
# The training loop's features under `mpirun -np 2` with FSDP and expert parallelism (ep 2):
#   - samples (rank 0 gathers every rank's shards) and expert reports on: the trained state is
#     bitwise the state of the same job with them off, and each sample equals `moe generate` on
#     the checkpoint of its step;
#   - accuracy and top experts agree with the loads reduced over ranks (counts of every token);
#   - train.stop_after: two pieces of 10 steps equal the uninterrupted 20-step job bit for bit;
#   - train.time_limit passed on every rank: all stop after the same step, exit 0;
#   - checkpoint.init_from a checkpoint saved by one process: the weights arrive unchanged.
# Usage: train_features.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
fail() { echo "FAIL: $*" >&2; exit 1; }
base=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=20 --set train.eval_every=0
      --set checkpoint.every=10 --set checkpoint.keep_last=0 --set train.micro_batch=2 --set parallel.ep=2)
two() { mpirun -np 2 "$MOE" train "${base[@]}" "$@"; }

two --set run.out_dir="$TMP/off" > "$TMP/off.log"
grep -q "2 rank(s) (dp 1 x ep 2)" "$TMP/off.log" || fail "not 2 ranks with ep 2: $(head -1 "$TMP/off.log")"
two --set run.out_dir="$TMP/on" --set train.sample_every=10 --set 'train.sample_prompt="ROMEO:"' \
  --set train.sample_tokens=20 --set train.expert_report_every=10 > "$TMP/on.log"
for step in 00000010 00000020; do
  cmp "$TMP/off/checkpoints/step-$step/state.h5" "$TMP/on/checkpoints/step-$step/state.h5" \
    || fail "samples / reports changed the trained state at step $step under mpirun"
done
[ "$(grep -ac '^top experts L1: ' "$TMP/on.log")" = 2 ] || fail "expected 2 top-expert lines"
python3 - "$TMP/on/metrics.jsonl" <<'PY' || fail "expert counts are not over both ranks' tokens"
import json, sys
reports = [r for r in map(json.loads, open(sys.argv[1])) if "expert_counts" in r]
assert [r["step"] for r in reports] == [10, 20], reports
for r in reports:  # 10 steps of 2 ranks x 2 x 32 tokens, top-2
    assert sum(r["expert_counts"][0]) == 10 * 2 * 2 * 32 * 2, r
PY
echo '{"prompt": "ROMEO:"}' > "$TMP/prompt.jsonl"
for step in 10 20; do
  "$MOE" generate --checkpoint "$TMP/on/checkpoints/step-000000$step" --prompts "$TMP/prompt.jsonl" --seed 1337 \
    --max-tokens 20 > "$TMP/gen-$step.json"
  python3 - "$TMP/gen-$step.json" "$TMP/on/samples.jsonl" $step <<'PY' || fail "sample at step $step differs from moe generate"
import json, sys
gen = json.loads(open(sys.argv[1]).read())
sample = [s for s in map(json.loads, open(sys.argv[2])) if s["step"] == int(sys.argv[3])][0]
assert gen["text"] == sample["text"] and len(gen["text"]) > 0, (gen, sample)
PY
done

# Two pieces of 10 steps (the same command twice) against the uninterrupted job.
for piece in 1 2; do
  two --set run.out_dir="$TMP/pieces" --set train.stop_after=10 > "$TMP/piece$piece.log" || fail "piece $piece failed"
done
grep -q "stopping after 10 step(s) of this run (train.stop_after) at step 10 of 20" "$TMP/piece1.log" || fail "no stop at 10"
"$MOE" inspect "$TMP/off/checkpoints/latest" --compare "$TMP/pieces/checkpoints/latest" --tolerance 0 > "$TMP/cmp.txt" \
  || fail "pieces differ from the whole job: $(tail -1 "$TMP/cmp.txt")"

two --set run.out_dir="$TMP/timed" --set train.time_limit=0.00001 > "$TMP/timed.log" || fail "time_limit exited $?"
grep -q "stopping at the time limit after step 1 of 20" "$TMP/timed.log" || fail "no agreed time-limit stop"
[ -d "$TMP/timed/checkpoints/step-00000001" ] || fail "no checkpoint at the time limit"

# init_from a one-process checkpoint, lr 0 and no bias update: the weights are the source's.
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/single" --set train.micro_batch=4 --set parallel.ep=1 \
  --set train.steps=10 > /dev/null
two --set run.out_dir="$TMP/tuned" --set checkpoint.init_from="$TMP/single/checkpoints/latest" --set train.steps=1 \
  --set train.warmup=0 --set train.lr=0 --set train.min_lr=0 --set model.router.bias_update_rate=0 > "$TMP/tuned.log"
grep -q "initialized from the weights of" "$TMP/tuned.log" || fail "no init note"
"$MOE" inspect "$TMP/single/checkpoints/latest" --compare "$TMP/tuned/checkpoints/latest" --json > "$TMP/init.json"
python3 - "$TMP/init.json" <<'PY' || fail "init_from under mpirun changed the weights"
import json, sys
t = [x for x in json.load(open(sys.argv[1]))["tensors"] if not x["name"].startswith("optimizer.")]
assert t and all(x["max_abs_diff"] == 0 for x in t), [x["name"] for x in t if x["max_abs_diff"]]
PY
echo ok
