#!/usr/bin/env bash
# The numeric guard under mpirun -np 2 (launch/numeric_guard.h), with NaNs injected into one
# rank's step by MOE_FAULT_INJECT:
#   (a) one bad step is skipped on every rank and leaves the whole state (weights, moments, router
#       biases, optimizer step count) bit-for-bit as it was; it is in the log and metrics.jsonl
#   (b) train.max_bad_steps in a row roll back to the last checkpoint and skip the streak's
#       samples: the final state equals, bitwise, a run given the skip list up front
#   (c) a resume after the rollback (from a later checkpoint, or from the one rolled back to)
#       repeats the same skip: bitwise the same final state again
#   (d) bad values of the new keys, of MOE_FAULT_INJECT and of the skip file: one clear error
#   (e) nothing to roll back to, or train.max_rollbacks reached: a clear error, not a loop
#   and the loss-spike log against a recomputation from metrics.jsonl.
# Usage: numeric_guard.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
# Global batch 4 (2 ranks x micro_batch 2): step s (0-based) reads samples 4s..4s+3.
common=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.micro_batch=2
        --set train.eval_every=0 --set checkpoint.keep_last=0)
np2() { mpirun -np 2 "$MOE" train "${common[@]}" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
same() { "$MOE" inspect "$1" --compare "$2" --tolerance 0 > "$TMP/cmp" || { cat "$TMP/cmp"; fail "$3"; }; }
differ() { ! "$MOE" inspect "$1" --compare "$2" --tolerance 0 > /dev/null || fail "$3"; }
meta() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]+"/meta.json")).get(sys.argv[2]))' "$1" "$2"; }
has() { grep -q -- "$2" "$1" || { cat "$1"; fail "no '$2' in $1"; }; }
ck() { echo "$TMP/$1/checkpoints/step-$(printf %08d "$2")"; }

# (a) A reference run, and the same run with step 7 (logged as step 8) NaN in rank 1's gradients.
np2 --set train.steps=14 --set checkpoint.every=1 --set run.out_dir="$TMP/n" \
    --set train.spike_window=2 --set train.spike_zscore=0.3 > "$TMP/n.log"
MOE_FAULT_INJECT="nan_grad@step=7,rank=1" np2 --set train.steps=14 --set checkpoint.every=1 \
    --set run.out_dir="$TMP/f" > "$TMP/f.log"
has "$TMP/f.log" "^step 8 skipped (no update): non-finite grad norm .* samples 28..31 | 1 bad step(s) in a row"
has "$TMP/f.log" "^checkpoint step 8 postponed"  # a rollback might need step 7's
[ ! -e "$(ck f 8)" ] || fail "checkpoint 8 saved during a streak"
same "$(ck n 7)" "$(ck f 7)" "the fault changed steps before it"
[ "$(meta "$(ck f 14)" optimizer_steps)" = 13 ] || fail "optimizer steps $(meta "$(ck f 14)" optimizer_steps), expected 13"
[ "$(meta "$(ck f 14)" skipped_steps)" = 1 ] || fail "skipped_steps not in the checkpoint"
differ "$(ck n 14)" "$(ck f 14)" "a skipped step changed nothing downstream"
python3 - "$TMP/f/metrics.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bad = [r for r in rows if r.get("skipped")]
assert [(r["step"], r["reason"], r["samples"], r["bad_steps"], r["skipped_steps"]) for r in bad] == \
    [(8, "non-finite grad norm", [[28, 32]], 1, 1)], bad
steps = [r for r in rows if "grad_norm" in r and not r.get("skipped")]
assert [r["step"] for r in steps] == [s for s in range(1, 15) if s != 8], [r["step"] for r in steps]
assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in steps)
assert [r.get("skipped_steps", 0) for r in steps] == [0] * 7 + [1] * 6
PY
# With max_bad_steps 0 (no rollback, so no save waits) the checkpoints around a skipped step can
# be compared: NaN in rank 0's loss alone skips step 8 too, and leaves the state bit-for-bit.
MOE_FAULT_INJECT="nan_loss@step=7,rank=0" np2 --set train.steps=9 --set checkpoint.every=1 \
    --set train.max_bad_steps=0 --set run.out_dir="$TMP/f0" > "$TMP/f0.log"
has "$TMP/f0.log" "^step 8 skipped (no update): non-finite loss"
same "$(ck f0 7)" "$(ck f0 8)" "a skipped step changed the state"
[ "$(meta "$(ck f0 8)" optimizer_steps)" = 7 ] || fail "a skipped step counted as an optimizer step"
differ "$(ck f0 8)" "$(ck f0 9)" "the step after a skipped one did not train"
echo "ok (a): a non-finite step is skipped on every rank, state unchanged bitwise, logged and counted"

# Loss spikes: exactly the steps whose loss is > mean + 0.3 std of the 2 before (recomputed here).
python3 - "$TMP/n/metrics.jsonl" "$TMP/n.log" <<'PY'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
loss = {r["step"]: r["loss"] for r in rows if "grad_norm" in r}
expected = []
for s in range(3, 15):
    w = [loss[s - 2], loss[s - 1]]
    m, sd = sum(w) / 2, statistics.stdev(w)
    if sd > 0 and (loss[s] - m) / sd > 0.3: expected.append(s)
logged = [r["step"] for r in rows if "loss_spike" in r]
printed = [int(x) for x in re.findall(r"^loss spike at step (\d+)", open(sys.argv[2]).read(), re.M)]
assert expected and logged == expected == printed, (expected, logged, printed)
print("ok: loss spikes at steps", logged)
PY

# (b) Steps 7..9 NaN on rank 1 with max_bad_steps 3: roll back to checkpoint 5, skip samples 28..39.
faults="nan_grad@step=7-9,rank=1"
MOE_FAULT_INJECT=$faults np2 --set train.steps=14 --set checkpoint.every=5 --set run.out_dir="$TMP/b" > "$TMP/b.log"
has "$TMP/b.log" "^step 10 skipped (no update): .* 3 bad step(s) in a row (train.max_bad_steps 3)"
has "$TMP/b.log" "^rolled back to .*step-00000005 (step 5) after 3 non-finite steps in a row; samples \[\[28,40\]\]"
python3 - "$TMP/b" <<'PY'
import json, sys
d = sys.argv[1]
rec = json.load(open(d + "/skipped_samples.json"))
assert rec["skip_samples"] == [[28, 40]], rec
assert [(r["at_step"], r["to_step"], r["bad_steps"]) for r in rec["rollbacks"]] == [(10, 5, [8, 9, 10])], rec
rows = [json.loads(l) for l in open(d + "/metrics.jsonl")]
# The rows of the rolled-back steps are dropped; the rollback is recorded at step 5.
assert [r["step"] for r in rows if "grad_norm" in r] == list(range(1, 15)), [r["step"] for r in rows]
assert [r["rollback"]["bad_steps"] for r in rows if "rollback" in r] == [[8, 9, 10]]
assert json.load(open(d + "/checkpoints/step-00000014/meta.json"))["skip_samples"] == [[28, 40]]
PY
# The same windows skipped from the start: the skip list given up front in the run directory.
mkdir -p "$TMP/r" && cp "$TMP/b/skipped_samples.json" "$TMP/r/"
np2 --set train.steps=14 --set checkpoint.every=5 --set run.out_dir="$TMP/r" > "$TMP/r.log"
has "$TMP/r.log" "^skipping 12 sample(s) in 1 range(s), as recorded in"
same "$(ck b 14)" "$(ck r 14)" "rollback run != run that skipped the same samples from the start"
differ "$(ck b 14)" "$(ck n 14)" "skipping samples changed nothing (the comparison cannot fail)"
echo "ok (b): rollback + skip == skipping the same samples from the start, bitwise"

# (c) The same faults, stopped after step 11 (after the rollback), then resumed without faults.
MOE_FAULT_INJECT=$faults np2 --set train.steps=14 --set checkpoint.every=5 --set train.stop_after=11 \
    --set run.out_dir="$TMP/c" > "$TMP/c1.log"
has "$TMP/c1.log" "^rolled back to"
np2 --set train.steps=14 --set checkpoint.every=5 --set run.out_dir="$TMP/c" > "$TMP/c2.log"
has "$TMP/c2.log" "^resumed from .*step-00000011"
same "$(ck b 14)" "$(ck c 14)" "resume after a rollback did not repeat the skip"
# A job that died right after the rollback restarts from the checkpoint it rolled back to (which
# predates the skip list): the run directory's record repeats the skip.
rm -rf "$(ck c 10)" "$(ck c 11)" "$(ck c 14)"
np2 --set train.steps=14 --set checkpoint.every=5 --set run.out_dir="$TMP/c" > "$TMP/c3.log"
has "$TMP/c3.log" "^resumed from .*step-00000005"
same "$(ck b 14)" "$(ck c 14)" "resume from the rolled-back-to checkpoint did not repeat the skip"
! grep -q "skipped (no update)" "$TMP/c3.log" || fail "the resumed run met NaN"
echo "ok (c): resumes after a rollback repeat the same skip, bitwise"

# (d) One clear line and exit 2 for each bad value.
expect_error() {
  local pattern=$1; shift
  if "$@" > "$TMP/out" 2> "$TMP/err"; then fail "accepted: $*"; fi
  grep -q "^error: .*$pattern" "$TMP/err" || { cat "$TMP/err"; fail "no clear error for: $*"; }
}
one=("$MOE" train "${common[@]}" --set run.out_dir="$TMP/d" --set train.steps=2)
expect_error "train.max_bad_steps is -1 (expected >= 0)" "${one[@]}" --set train.max_bad_steps=-1
expect_error "train.max_rollbacks is -1 (expected >= 0)" "${one[@]}" --set train.max_rollbacks=-1
expect_error "train.spike_window is 1 (expected 0 (off) or a window of at least 2 losses)" "${one[@]}" --set train.spike_window=1
expect_error "train.spike_zscore is 0 (expected > 0)" "${one[@]}" --set train.spike_zscore=0
expect_error "train.spike_zscore" "${one[@]}" --set train.spike_zscore=nan
expect_error "MOE_FAULT_INJECT='nan_grad@rank=1' (expected RANK:STEP" env MOE_FAULT_INJECT=nan_grad@rank=1 "${one[@]}"
mkdir -p "$TMP/d" && echo '{"skip_samples": [[40, 28]]}' > "$TMP/d/skipped_samples.json"
expect_error "skipped_samples.json: skip_samples is \[\[40,28\]\] (expected a list of \[begin, end\] sample ranges" "${one[@]}"
echo "ok (d): bad keys, fault specs and skip files are refused with one clear line"

# (e) No checkpoint to roll back to; a rollback over train.max_rollbacks. Both end the job.
if MOE_FAULT_INJECT="nan_loss@step=2-4" np2 --set train.steps=8 --set checkpoint.every=0 \
    --set run.out_dir="$TMP/e1" > "$TMP/e1.log" 2>&1; then fail "rolled back to nothing"; fi
has "$TMP/e1.log" "error: .*3 non-finite steps in a row (steps 3..5, train.max_bad_steps 3) and no committed checkpoint"
if MOE_FAULT_INJECT="nan_loss@step=2-3" np2 --set train.steps=8 --set checkpoint.every=2 --set train.max_bad_steps=2 \
    --set train.max_rollbacks=0 --set run.out_dir="$TMP/e2" > "$TMP/e2.log" 2>&1; then fail "rolled back over the limit"; fi
has "$TMP/e2.log" "error: .*train.max_rollbacks is 0"
echo "ok (e): nothing to roll back to, or too many rollbacks: a clear error"
