#!/usr/bin/env bash
# Training across machines with Open MPI and a hostfile, restarted after a crash:
#   launch/multinode.sh HOSTFILE CONFIG.yaml [--set key=value]...
#
# HOSTFILE lists the machines and how many ranks each runs, e.g. two nodes with 2 ranks each:
#     node-a slots=2
#     node-b slots=2
# Every machine needs the same build at the same path (a shared filesystem, or the same checkout)
# and passwordless ssh from this one; data.path and run.out_dir should be on a shared filesystem
# (rank 0 writes checkpoints, every rank reads the data). Ranks fill a node before the next one
# (--map-by slot), so with parallel.ep <= slots per node the all-to-all stays inside a node, and
# with parallel.dp_replicate = a multiple of the node count (the same slots on every node) each
# HSDP shard group does too. At startup rank 0 prints its node and node-local rank (the other
# ranks in their run.rank_logs) and, with dp_replicate > 1, whether each replica's shard group is
# inside one node (a warning if not).
# Environment: MOE (binary), THREADS (per rank, default: cores of this machine / slots of its
# line), ATTEMPTS and DELAY (restarts), MPIRUN_ARGS (extra mpirun flags, e.g. "--mca btl_tcp_if_include eth0",
# or "--mca plm_rsh_agent PROGRAM" to start the other nodes' daemons with something other than
# ssh; tests/mpi/multinode.sh runs two nodes in network namespaces that way).
set -euo pipefail
usage="usage: launch/multinode.sh HOSTFILE CONFIG.yaml [--set key=value]..."
HOSTFILE=${1:?$usage}
CONFIG=${2:?$usage}
shift 2
[ -r "$HOSTFILE" ] || { echo "error: $HOSTFILE: cannot read the hostfile" >&2; exit 2; }
NP=$(awk '!/^[[:space:]]*(#|$)/ { n = 1; for (i = 2; i <= NF; ++i) if ($i ~ /^slots=/) { split($i, a, "="); n = a[2] } np += n } END { print np + 0 }' "$HOSTFILE")
[ "$NP" -ge 1 ] || { echo "error: $HOSTFILE: no hosts (expected lines like 'node-a slots=2')" >&2; exit 2; }
SLOTS=$(awk '!/^[[:space:]]*(#|$)/ { for (i = 2; i <= NF; ++i) if ($i ~ /^slots=/) { split($i, a, "="); print a[2]; exit } print 1; exit }' "$HOSTFILE")
HERE=$(cd "$(dirname "$0")" && pwd)
MOE=${MOE:-$HERE/../build/moe}
THREADS=${THREADS:-$(( $(nproc) / SLOTS ))}; [ "$THREADS" -ge 1 ] || THREADS=1
echo "multinode: $NP ranks from $HOSTFILE, $THREADS threads each"
# shellcheck disable=SC2086
exec "$HERE/run_with_restarts.sh" --attempts "${ATTEMPTS:-10}" --delay "${DELAY:-30}" -- \
  mpirun -np "$NP" --hostfile "$HOSTFILE" --map-by slot -x MOE_NUM_THREADS="$THREADS" -x MOE_COMM_TIMEOUT_S \
  ${MPIRUN_ARGS:-} "$MOE" train --config "$CONFIG" "$@"
