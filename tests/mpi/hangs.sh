#!/usr/bin/env bash
# Hangs end the job, with a message that names the culprit, and lose nothing (issue 19):
#   (a) a rank stopped mid-run (SIGSTOP): the others' collective times out after MOE_COMM_TIMEOUT_S,
#       a roll call finds the rank that does not answer, the job ends naming it and the collective;
#       a rerun resumes from the last committed checkpoint
#   (b) a rank killed mid-run (SIGKILL): mpirun ends the job at once, naming the rank
#   (c) a background checkpoint write that never finishes (MOE_FAULT_INJECT stall_save, a hung
#       filesystem): the trainer reports it after checkpoint.write_timeout_s and exits 2, under
#       mpirun and alone; the stalled step is not committed, the one before is, and a rerun resumes
# Usage: hangs.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
common=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.micro_batch=2
        --set train.eval_every=0 --set checkpoint.keep_last=0 --set checkpoint.every=2)
fail() { echo "FAIL: $*"; exit 1; }
has() { grep -q -- "$2" "$1" || { cat "$1"; fail "no '$2' in $1"; }; }
ck() { echo "$TMP/$1/checkpoints/step-$(printf %08d "$2")"; }
# The pid of world rank $2 among the processes of run dir $1.
rank_pid() {
  local p
  for p in $(pgrep -f -- "run.out_dir=$1"); do
    [ "$(tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -c "^OMPI_COMM_WORLD_RANK=$2$")" = 1 ] && { echo "$p"; return; }
  done
}
# Waits (up to 120 s) until log $1 shows a committed checkpoint of step >= $2.
wait_for_checkpoint() {
  for _ in $(seq 1200); do
    grep -q "checkpoint .*step-0*\([$2-9]\|[1-9][0-9]\+\) committed" "$1" 2>/dev/null && return
    sleep 0.1
  done
  cat "$1"; fail "no checkpoint of step $2 within 120 s"
}
# The step of the newest committed checkpoint of run $1.
last_committed() {
  local c; c=$(ls -d "$TMP/$1"/checkpoints/step-*/COMMITTED | sort | tail -1)
  [ -n "$c" ] || fail "no committed checkpoint in $TMP/$1"
  basename "$(dirname "$c")" | sed 's/^step-0*//'
}

# Starts a long run in $TMP/$1 under mpirun (with the environment assignments after $3), waits for
# a committed checkpoint of step >= $3, sends signal $2 to rank 1, and sets rc (mpirun's exit code)
# and took (seconds from the signal until mpirun exited).
signal_rank1() {
  local dir=$1 sig=$2 at=$3; shift 3
  env "$@" mpirun -np 2 "$MOE" train "${common[@]}" --set train.steps=100000 --set run.out_dir="$TMP/$dir" \
      > "$TMP/$dir.log" 2> "$TMP/$dir.err" & local job=$!
  wait_for_checkpoint "$TMP/$dir.log" "$at"
  local victim; victim=$(rank_pid "$TMP/$dir" 1); [ -n "$victim" ] || fail "rank 1's process not found"
  kill -"$sig" "$victim"; local sent; sent=$(date +%s)
  rc=0; wait $job || rc=$?
  took=$(( $(date +%s) - sent ))
  [ "$rc" != 0 ] || fail "the job exited 0 after rank 1 got SIG$sig"
  [ "$took" -le 30 ] || fail "the job took $took s to end after rank 1 got SIG$sig"
}

# (a) SIGSTOP rank 1 of 2 once a checkpoint is committed: the job ends within the timeout, the roll
# call window and some slack (the ctest timeout is the backstop). Rank 0 is usually waiting in a
# collective, whose roll call names rank 1; if it was waiting for the background save instead,
# the save's own wait for rank 1's part (the same timeout) names it.
signal_rank1 a STOP 4 MOE_COMM_TIMEOUT_S=5
grep -q -E "^error: rank 0: (collective [a-z_]+ timed out after 5 s \(MOE_COMM_TIMEOUT_S\); no answer within 2.5 s from rank 1 \(stopped|checkpoint of step [0-9]+ failed: .*waited 5 s for rank 1 )" "$TMP/a.err" ||
  { cat "$TMP/a.err"; fail "the stopped rank 1 was not named"; }
! pgrep -f -- "run.out_dir=$TMP/a" > /dev/null || fail "processes of the stopped job are left"
at=$(last_committed a); [ "$at" -ge 4 ] || fail "last committed step '$at'"
mpirun -np 2 "$MOE" train "${common[@]}" --set train.steps=$((at + 2)) --set run.out_dir="$TMP/a" > "$TMP/a2.log"
has "$TMP/a2.log" "^resumed from .*step-0*$at"
[ -e "$(ck a $((at + 2)))/COMMITTED" ] || fail "the resumed run did not finish"
grep "^error: rank" "$TMP/a.err" | head -2
echo "ok (a): a stopped rank ended the job in $took s, named; resumed from step $at"

# (b) SIGKILL rank 1: Open MPI's launcher ends the job and names the rank.
signal_rank1 b KILL 2
grep -q "rank 1 .*exited on signal 9" "$TMP/b.log" "$TMP/b.err" || { cat "$TMP/b.err"; fail "the death of rank 1 was not named"; }
grep -h "exited on signal" "$TMP/b.log" "$TMP/b.err" | head -1
echo "ok (b): a killed rank ended the job in $took s, named by mpirun"

# (c) The checkpoint written after step 4 (0-based 3) never finishes on rank 0.
stall() {  # <out dir> <launcher...>
  local dir=$1; shift
  MOE_FAULT_INJECT="stall_save@step=3,rank=0" MOE_COMM_TIMEOUT_S=60 "$@" "$MOE" train "${common[@]}" \
      --set train.steps=8 --set checkpoint.write_timeout_s=3 --set run.out_dir="$TMP/$dir" > "$TMP/$dir.log" 2> "$TMP/$dir.err"
}
for mode in mpi alone; do
  start=$(date +%s); rc=0
  if [ $mode = mpi ]; then stall c_$mode mpirun -np 2 || rc=$?; else stall c_$mode env || rc=$?; fi
  took=$(( $(date +%s) - start ))
  [ "$rc" = 2 ] || { cat "$TMP/c_$mode.err"; fail "$mode: exit $rc after a stalled checkpoint write, expected 2"; }
  [ "$took" -le 60 ] || fail "$mode: took $took s"
  has "$TMP/c_$mode.err" "checkpoint of step 4: its background write under .* has not finished after 3 s (checkpoint.write_timeout_s)"
  [ -e "$(ck c_$mode 2)/COMMITTED" ] || fail "$mode: checkpoint 2 lost"
  [ ! -e "$(ck c_$mode 4)" ] || fail "$mode: the stalled checkpoint 4 was committed"
  if [ $mode = mpi ]; then mpirun -np 2 "$MOE" train "${common[@]}" --set train.steps=8 --set run.out_dir="$TMP/c_$mode" > "$TMP/c2.log"
  else "$MOE" train "${common[@]}" --set train.steps=8 --set run.out_dir="$TMP/c_$mode" > "$TMP/c2.log"; fi
  has "$TMP/c2.log" "^resumed from .*step-00000002"
  [ -e "$(ck c_$mode 8)/COMMITTED" ] || fail "$mode: the resumed run did not finish"
  grep -h "^error" "$TMP/c_$mode.err" | head -1
  echo "ok (c, $mode): a stalled checkpoint write ended the run in $took s with its step named; resumed from step 2"
done
