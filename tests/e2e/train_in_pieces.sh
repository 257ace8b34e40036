#!/usr/bin/env bash
# Runs in pieces: train.stop_after and train.time_limit save a checkpoint and exit 0 while the
# learning-rate schedule stays defined by train.steps, so a 40-step cosine run made of two pieces
# of 20 equals an uninterrupted one bit for bit (moe inspect --compare --tolerance 0, and the same
# losses and lrs in metrics.jsonl). Raising train.steps on resume is stated in the log with the lr
# of the next step under both schedules. Usage: train_in_pieces.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
fail() { echo "FAIL: $*" >&2; exit 1; }
base=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=40 --set train.eval_every=0
      --set checkpoint.every=0)

"$MOE" train "${base[@]}" --set run.out_dir="$TMP/whole" > "$TMP/whole.log"
# The same command twice, 20 steps each.
for piece in 1 2; do
  "$MOE" train "${base[@]}" --set run.out_dir="$TMP/pieces" --set train.stop_after=20 > "$TMP/piece$piece.log" \
    || fail "piece $piece exited $?"
done
grep -q "stopping after 20 step(s) of this run (train.stop_after) at step 20 of 40 (checkpoint saved" "$TMP/piece1.log" \
  || fail "piece 1 did not stop at step 20"
grep -q "resumed from .*step-00000020 at step 20" "$TMP/piece2.log" || fail "piece 2 did not resume at 20"
grep -q "stopping" "$TMP/piece2.log" && fail "piece 2 reached train.steps: it should finish, not stop"
grep -q "note: the learning-rate schedule" "$TMP/piece2.log" && fail "a note although the schedule is unchanged"
"$MOE" inspect "$TMP/whole/checkpoints/latest" --compare "$TMP/pieces/checkpoints/latest" --tolerance 0 > "$TMP/cmp.txt" \
  || fail "the run in pieces differs from the whole run: $(tail -1 "$TMP/cmp.txt")"
python3 - "$TMP/whole/metrics.jsonl" "$TMP/pieces/metrics.jsonl" <<'PY' || fail "metrics.jsonl differ"
import json, sys
a, b = ([(r["step"], r["loss"], r["lr"], r["accuracy"]) for r in map(json.loads, open(p)) if "loss" in r] for p in sys.argv[1:])
assert [s for s, *_ in a] == list(range(1, 41)) and a == b, (a, b)
PY

# Raising train.steps on resume: the log states the next step's lr under the old and the new schedule.
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/pieces" --set train.steps=60 --set train.stop_after=1 > "$TMP/more.log"
python3 - "$TMP/more.log" <<'PY' || fail "no clear note on the changed schedule: $(grep note "$TMP/more.log")"
import math, re, sys
log = open(sys.argv[1]).read()
m = re.search(r"note: the learning-rate schedule differs from the checkpoint's \(train.steps 40 -> 60\): the next "
              r"step \(41\) trains at lr ([0-9.e+-]+) under the checkpoint's schedule, ([0-9.e+-]+) under this run's", log)
assert m, log
old, new = float(m.group(1)), float(m.group(2))
cos = lambda steps: 1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * min(1, (40 - 2) / (steps - 2))))
assert abs(old - cos(40)) < 1e-8 and abs(new - cos(60)) < 1e-8, (old, new)
assert re.search(r"^step     41/60 \| loss [0-9.]+ \| acc [0-9.]+% \| lr " + re.escape(f"{new:.3e}"), log, re.M), log
PY

# train.time_limit (minutes of wall clock since start): a limit already passed stops after the
# first step with a checkpoint and exit 0.
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/timed" --set train.time_limit=0.00001 > "$TMP/timed.log" \
  || fail "time_limit exited $?"
grep -q "stopping at the time limit after step 1 of 40" "$TMP/timed.log" || fail "no time-limit stop: $(tail -3 "$TMP/timed.log")"
[ -d "$TMP/timed/checkpoints/step-00000001" ] || fail "no checkpoint at the time limit"
echo ok
