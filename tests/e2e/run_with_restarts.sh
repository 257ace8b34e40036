#!/usr/bin/env bash
# launch/run_with_restarts.sh: retries a failing command until it succeeds, numbering attempts;
# stops at once on exit 2/3 (errors a restart cannot fix) and after --attempts; forwards SIGTERM.
# Usage: run_with_restarts.sh <moe binary> <source dir>
set -euo pipefail
SRC=$2
RWR=$SRC/launch/run_with_restarts.sh
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Fails (exit 1, then killed by a signal) twice, then succeeds.
cat > "$TMP/flaky.sh" <<'SH'
n=$(cat "$1" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$1"
[ $n -eq 1 ] && exit 1
[ $n -eq 2 ] && kill -9 $$
exit 0
SH
bash "$RWR" --attempts 5 --delay 0 -- bash "$TMP/flaky.sh" "$TMP/count" 2> "$TMP/log" || fail "did not succeed: $(cat "$TMP/log")"
grep -q "attempt 1/5: bash" "$TMP/log" && grep -q "attempt 2 exited 137; restarting" "$TMP/log" &&
  grep -q "attempt 3 succeeded" "$TMP/log" || fail "unexpected log: $(cat "$TMP/log")"

set +e
bash "$RWR" --attempts 3 --delay 0 -- bash -c 'exit 1' 2> "$TMP/log"; rc=$?
[ $rc -eq 1 ] && grep -q "attempt 3 exited 1; no attempts left" "$TMP/log" || fail "attempt limit: $rc $(cat "$TMP/log")"
bash "$RWR" --delay 0 -- bash -c 'exit 2' 2> "$TMP/log"; rc=$?
[ $rc -eq 2 ] && grep -q "giving up" "$TMP/log" && ! grep -q "attempt 2" "$TMP/log" || fail "exit 2 was retried: $(cat "$TMP/log")"
bash "$RWR" 2> "$TMP/log"; rc=$?
[ $rc -eq 2 ] && grep -q "error: no command given" "$TMP/log" || fail "no command: $rc"
set -e

# SIGTERM reaches the command (a trainer saves and exits 0 on it), and then the loop ends.
bash "$RWR" --delay 0 -- bash -c 'trap "echo got-term; exit 0" TERM; while :; do sleep 0.05; done' > "$TMP/out" 2> "$TMP/log" &
pid=$!
sleep 0.5
kill -TERM $pid
wait $pid || fail "SIGTERM: loop exited $?"
grep -q got-term "$TMP/out" || fail "SIGTERM was not forwarded"
echo ok
