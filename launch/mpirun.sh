#!/usr/bin/env bash
# Data-parallel training on one machine with Open MPI, restarted after a crash:
#   launch/mpirun.sh NP CONFIG.yaml [--set key=value]...
# Each rank gets (cores / NP) threads. Ctrl-C or SIGTERM: the ranks save at the next step boundary
# and exit 0. Running the same command again continues from the newest committed checkpoint.
set -euo pipefail
NP=${1:?usage: launch/mpirun.sh NP CONFIG.yaml [--set key=value]...}
CONFIG=${2:?usage: launch/mpirun.sh NP CONFIG.yaml [--set key=value]...}
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
MOE=${MOE:-$HERE/../build/moe}
threads=$(( $(nproc) / NP )); [ $threads -ge 1 ] || threads=1
# Root in containers and CI needs these; more ranks than cores needs --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec "$HERE/run_with_restarts.sh" --attempts "${ATTEMPTS:-10}" --delay "${DELAY:-5}" -- \
  mpirun -np "$NP" --oversubscribe -x MOE_NUM_THREADS=$threads "$MOE" train --config "$CONFIG" "$@"
