#!/usr/bin/env bash
# Runs the libFuzzer targets that `make fuzz` builds (docs/testing.md, "Fuzzing").
#   usage: tests/fuzz/run.sh BIN_DIR SECONDS [TARGET...]     (default: every fuzz_* in BIN_DIR)
# Each target first replays its committed regression inputs (tests/fuzz/regressions/<target>/: inputs
# that once crashed it), then fuzzes for SECONDS from its seed corpus (tests/fuzz/corpus/<target>/)
# plus what earlier runs found ($FUZZ_WORK/<target>/corpus, default BIN_DIR/work), $JOBS targets at a
# time. One line per target: executions, executions/s, coverage (edges and features), corpus size.
# Exits 1 when any target crashes, times out (an input over 10 s), leaks, or allocates more than
# 256 MB at once (a size taken from the input and trusted); the reproducer is in
# $FUZZ_WORK/<target>/ and the log beside it.
set -uo pipefail
BIN=$(cd "$1" && pwd); SECONDS_EACH=$2; shift 2
SRC=$(cd "$(dirname "$0")" && pwd)
WORK=${FUZZ_WORK:-$BIN/work}
JOBS=${JOBS:-$(nproc)}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$BIN"/fuzz_*; do [ -x "$f" ] && targets+=("$(basename "$f" | sed 's/^fuzz_//')"); done
fi
[ ${#targets[@]} -gt 0 ] || { echo "run.sh: no fuzz_* targets in $BIN (expected make fuzz to have built them)" >&2; exit 2; }
# Leaks are findings; UBSan stops at its first report, like the sanitizer build's tests.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
FLAGS=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -max_len=65536 -use_value_profile=1 -print_final_stats=1)

one() {
  local t=$1 dir="$WORK/$1"
  mkdir -p "$dir/corpus"
  local exe="$BIN/fuzz_$t" log="$dir/log"
  if [ -d "$SRC/regressions/$t" ] && [ -n "$(ls -A "$SRC/regressions/$t")" ]; then
    if ! (cd "$dir" && "$exe" "${FLAGS[@]}" "$SRC/regressions/$t"/* > "$dir/regressions.log" 2>&1); then
      echo "fuzz_$t: FAILED on a committed regression input (log: $dir/regressions.log)"
      tail -30 "$dir/regressions.log"
      return 1
    fi
  fi
  # The work corpus first: new inputs are written there, never into the committed seeds.
  (cd "$dir" && "$exe" "${FLAGS[@]}" -max_total_time="$SECONDS_EACH" -artifact_prefix="$dir/" \
     "$dir/corpus" "$SRC/corpus/$t" > "$log" 2>&1)
  local rc=$?
  local execs rate cov ft corp
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ $rc -ne 0 ]; then
    echo "fuzz_$t: FAILED after ${execs:-?} executions (log: $log; reproducer: $(ls "$dir"/{crash,leak,timeout,oom,slow-unit}-* 2>/dev/null | head -1))"
    grep -m1 -E 'ERROR: |runtime error|fuzz target:|terminate called|==[0-9]+==' "$log"
    tail -40 "$log"
    return 1
  fi
  printf 'fuzz_%-20s %4ss %10s execs %7s/s  cov %6s  ft %7s  corpus %5s\n' "$t" "$SECONDS_EACH" "$execs" "$rate" "$cov" "$ft" "$corp"
}

status=0
pids=()
for t in "${targets[@]}"; do
  [ -x "$BIN/fuzz_$t" ] || { echo "run.sh: $BIN/fuzz_$t not built" >&2; status=1; continue; }
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
  one "$t" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
