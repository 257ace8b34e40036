#!/usr/bin/env bash
# Re-launches a training command until it succeeds: the trainer resumes from its newest committed
# checkpoint by itself (checkpoint.resume: auto), so a crash, a kill -9 or a lost node costs only
# the steps since the last save.
#
#   launch/run_with_restarts.sh [--attempts N] [--delay S] -- COMMAND [ARGS...]
#   e.g. launch/run_with_restarts.sh --attempts 20 -- mpirun -np 4 build/moe train --config c.yaml
#
# Exit 0 once COMMAND exits 0. Exit codes that a restart cannot fix end the loop at once with that
# code: 2 (bad input: config, data, checkpoint path, or a checkpoint save that failed, e.g. a full
# disk) and 3 (internal error). Anything else (a signal, an MPI abort) is retried after S seconds
# (default 10), up to N attempts in all (default 10; 0 = no limit).
set -uo pipefail
attempts=10; delay=10
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case $1 in
    --attempts) attempts=${2:?--attempts needs a value}; shift 2 ;;
    --delay) delay=${2:?--delay needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "error: no command given (usage: $0 [--attempts N] [--delay S] -- COMMAND ...)" >&2; exit 2; }
[[ $attempts =~ ^[0-9]+$ ]] || { echo "error: --attempts '$attempts' (expected a whole number)" >&2; exit 2; }
[[ $delay =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "error: --delay '$delay' (expected seconds)" >&2; exit 2; }

# SIGTERM / SIGUSR1 (a scheduler's warning) go to the running command, which saves and exits 0.
child=0
forward() { [ $child -gt 0 ] && kill -"$1" "$child" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward USR1' USR1
trap 'forward INT' INT

of=""; [ "$attempts" -gt 0 ] && of="/$attempts"
n=0
while :; do
  n=$((n + 1))
  echo "run_with_restarts: attempt $n$of: $*" >&2
  "$@" &
  child=$!
  # `wait` returns early when a trapped signal arrives; wait again until the command has exited.
  while :; do
    wait "$child"; rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=0
  if [ $rc -eq 0 ]; then
    echo "run_with_restarts: attempt $n succeeded" >&2
    exit 0
  fi
  if [ $rc -eq 2 ] || [ $rc -eq 3 ]; then
    echo "run_with_restarts: attempt $n exited $rc (an error a restart cannot fix); giving up" >&2
    exit $rc
  fi
  if [ "$attempts" -gt 0 ] && [ $n -ge "$attempts" ]; then
    echo "run_with_restarts: attempt $n exited $rc; no attempts left" >&2
    exit $rc
  fi
  echo "run_with_restarts: attempt $n exited $rc; restarting in $delay s" >&2
  sleep "$delay"
done
