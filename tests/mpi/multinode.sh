#!/usr/bin/env bash
# Across nodes: launch/multinode.sh on two simulated nodes of this machine, 2 ranks each, MPI over
# TCP between them (docs/parallelism.md, "Multi-node launch").
#   - each rank names its node and node-local rank: ranks 0,1 on node-a as local ranks 0,1 of 2,
#     ranks 2,3 on node-b as local ranks 0,1 of 2 (rank 0 in the header, the others in their logs)
#   - HSDP's shard groups (parallel.dp_replicate 2) stay inside a node: replica 0 on node-a,
#     replica 1 on node-b; with 1 + 3 slots replica 0 spans both nodes, and rank 0 warns
#   - 20 steps of configs/tiny.yaml, ep 1 and ep 2, give the single-process run's per-step losses and
#     grad norms to 1e-5 relative and its final state to 1e-5 (moe inspect --compare), and the
#     traffic went over the link between the nodes
# How: two network namespaces joined by a veth pair (10.77.0.1 and 10.77.0.2/24, nothing else:
# no traffic leaves the machine), each process in them with its own host name (a UTS namespace),
# since Open MPI tells nodes apart by host name. mpirun runs on node-a, so node-a's ranks are its
# local ones; it starts node-b's daemon through plm_rsh_agent, a script in $TMP that does what ssh
# would: runs the command line inside node-b's namespaces with a login-like environment. The
# namespaces share this machine's filesystem, which stands in for a shared one. The hostfile
# names node-a and node-b; nothing needs to resolve them (the agent maps names to namespaces, and
# Open MPI's daemons and ranks exchange IP addresses), so nothing is written outside $TMP. The
# namespaces are removed on exit, failed or not.
# Needs root (CI runs as root): without it, or without ip/unshare/namespaces, prints SKIP and
# exits 77.
# Usage: multinode.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
fail() { echo "FAIL: $*"; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "making network namespaces needs root (uid $(id -u))"
for tool in ip unshare hostname mpirun python3; do
  command -v "$tool" > /dev/null || skip "no '$tool' command"
done

NS=(moe-a-$$ moe-b-$$)  # namespaces of node-a and node-b
HOSTS=(node-a node-b)
ADDR=(10.77.0.1 10.77.0.2)
run_pid=0  # the launch in flight
cleanup() {
  local ns pid i
  # A run still going is stopped as a scheduler would: TERM to the launcher, which stops mpirun,
  # which stops the ranks on both nodes.
  if [ "$run_pid" -gt 0 ] && kill -TERM "$run_pid" 2> /dev/null; then
    for i in $(seq 50); do
      [ -n "$(ip netns pids "${NS[0]}"; ip netns pids "${NS[1]}")" ] || break
      sleep 0.1
    done
  fi 2> /dev/null
  for ns in "${NS[@]}"; do
    # Processes a failed run left in the namespace (mpirun, orted, ranks): all started here.
    for pid in $(ip netns pids "$ns" 2> /dev/null); do kill -9 "$pid" 2> /dev/null || true; done
    ip netns del "$ns" 2> /dev/null || true  # its end of the veth pair goes with it
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP  # the EXIT trap runs on these signals too (Ctrl-C, a scheduler's TERM)

for ns in "${NS[@]}"; do
  ip netns add "$ns" 2> "$TMP/err" || skip "cannot make a network namespace: $(cat "$TMP/err")"
done
ip netns exec "${NS[0]}" unshare --uts hostname "${HOSTS[0]}" 2> "$TMP/err" ||
  skip "cannot give a process its own host name (unshare --uts): $(cat "$TMP/err")"
# The veth pair is made inside node-a's namespace with its peer in node-b's: it never exists in
# this machine's own network.
ip -n "${NS[0]}" link add veth-a type veth peer name veth-b netns "${NS[1]}" || fail "cannot make a veth pair"
for i in 0 1; do
  dev=veth-${HOSTS[i]#node-}
  ip -n "${NS[i]}" addr add "${ADDR[i]}/24" dev "$dev"
  ip -n "${NS[i]}" link set lo up
  ip -n "${NS[i]}" link set "$dev" up
done

# The remote agent, called as `agent [ssh options] HOST COMMAND...`. Like ssh it joins COMMAND
# into one shell command line (Open MPI quotes its arguments for that) and runs it in a clean
# environment: PATH and LD_LIBRARY_PATH, as a login shell on the node would have, and the
# sanitizers' settings when `make sanitize` runs this test (a cluster would set them in that shell).
cat > "$TMP/rsh" <<EOF
#!/bin/sh
while [ \$# -gt 0 ]; do
  case \$1 in
    -[bcEeFIiJLlmOoPpQRSWw]) shift 2 ;;  # ssh options that take a value
    -*) shift ;;
    *) break ;;
  esac
done
host=\$1; shift
case \$host in
  ${HOSTS[0]}) ns=${NS[0]} ;;
  ${HOSTS[1]}) ns=${NS[1]} ;;
  *) echo "rsh agent: unknown host '\$host'" >&2; exit 255 ;;
esac
exec env -i PATH="\$PATH" LD_LIBRARY_PATH="\${LD_LIBRARY_PATH:-}" HOME="\$HOME" \\
  \${LD_PRELOAD:+LD_PRELOAD="\$LD_PRELOAD"} \${ASAN_OPTIONS:+ASAN_OPTIONS="\$ASAN_OPTIONS"} \\
  \${LSAN_OPTIONS:+LSAN_OPTIONS="\$LSAN_OPTIONS"} \${UBSAN_OPTIONS:+UBSAN_OPTIONS="\$UBSAN_OPTIONS"} \\
  \${TSAN_OPTIONS:+TSAN_OPTIONS="\$TSAN_OPTIONS"} \\
  ip netns exec "\$ns" unshare --uts sh -c "hostname \$host && \$*"
EOF
chmod +x "$TMP/rsh"

net=10.77.0.0/24
mpirun_args="--mca plm_rsh_agent $TMP/rsh --mca btl tcp,vader,self --mca btl_tcp_if_include $net
              --mca oob_tcp_if_include $net"
common=(--set data.path="$TMP/data" --set train.steps=20 --set train.eval_every=10 --set checkpoint.every=10
        --set checkpoint.keep_last=0 --set train.micro_batch=1)
# on_nodes <hostfile> <out dir> [--set ...]: launch/multinode.sh on node-a, 4 ranks.
on_nodes() {
  local hostfile=$1 out=$2; shift 2
  timeout 120 ip netns exec "${NS[0]}" unshare --uts sh -c "hostname ${HOSTS[0]} && exec \"\$@\"" sh \
    env ATTEMPTS=1 THREADS=1 MOE="$MOE" MOE_COMM_TIMEOUT_S=60 MPIRUN_ARGS="$mpirun_args" \
    "$SRC/launch/multinode.sh" "$hostfile" "$SRC/configs/tiny.yaml" "${common[@]}" --set run.out_dir="$out" \
    --set run.rank_logs=true --set parallel.dp_replicate=2 --set train.grad_accum=1 "$@" > "$out.log" 2>&1 &
  # In the background, so that a signal to this script cleans up at once rather than after the run.
  run_pid=$!
  wait $run_pid || { cat "$out.log"; fail "$out: multinode.sh failed"; }
}
tx_bytes() { ip netns exec "${NS[0]}" cat /sys/class/net/veth-a/statistics/tx_bytes; }
expect() {  # expect <file> <exact line>
  grep -qxF "$2" "$1" || { cat "$1"; fail "$1: no line '$2'"; }
}

printf 'node-a slots=2\nnode-b slots=2\n' > "$TMP/hostfile"
"$MOE" train --config "$SRC/configs/tiny.yaml" "${common[@]}" --set run.out_dir="$TMP/np1" \
  --set train.grad_accum=4 > "$TMP/np1.log"
for ep in 1 2; do
  out=$TMP/nodes_ep$ep
  before=$(tx_bytes)
  on_nodes "$TMP/hostfile" "$out" --set parallel.ep=$ep
  echo "ep $ep: node-a sent $(( ($(tx_bytes) - before) / 1024 )) KiB to node-b"
  [ $(( $(tx_bytes) - before )) -gt 100000 ] || fail "ep $ep: little traffic between the nodes"
  expect "$out.log" "rank 0 on node-a (local rank 0 of 2, replica 0, dp 0, ep 0) | 4 ranks on 2 node(s)"
  for r in 1 2 3; do
    s=$((r % 2))  # position inside the replica
    expect "$out/logs/rank-$r.log" "rank $r on ${HOSTS[r / 2]} (local rank $s of 2, replica $((r / 2)), dp $((s / ep)), ep $((s % ep)))"
  done
  expect "$out.log" "HSDP: each replica's shard group is inside one node (replica 0 on node-a, replica 1 on node-b)"
  ! grep -q "warning: HSDP" "$out.log" || fail "ep $ep: a warning about HSDP's placement"
  grep "^rank\|^HSDP" "$out.log"; head -1 -q "$out"/logs/rank-*.log
  "$MOE" inspect "$TMP/np1/checkpoints/step-00000020" --compare "$out/checkpoints/step-00000020" \
    --tolerance 1e-5 > "$out.cmp" || { sort -k6 -g "$out.cmp" | tail -5; fail "ep $ep: state at step 20 differs"; }
  echo "ep $ep vs one process at step 20: $(tail -1 "$out.cmp")"
done

python3 "$(dirname "$0")/same_losses.py" "$TMP/np1" "$TMP/nodes_ep1" "$TMP/nodes_ep2" || fail "losses differ from one process"

# 1 + 3 slots: replica 0 = ranks {0, 1} spans node-a and node-b, replica 1 = {2, 3} is on node-b.
printf 'node-a slots=1\nnode-b slots=3\n' > "$TMP/uneven"
on_nodes "$TMP/uneven" "$TMP/uneven_run" --set train.steps=2 --set parallel.ep=1
expect "$TMP/uneven_run.log" "rank 0 on node-a (local rank 0 of 1, replica 0, dp 0, ep 0) | 4 ranks on 2 node(s)"
expect "$TMP/uneven_run/logs/rank-1.log" "rank 1 on node-b (local rank 0 of 3, replica 0, dp 1, ep 0)"
expect "$TMP/uneven_run/logs/rank-3.log" "rank 3 on node-b (local rank 2 of 3, replica 1, dp 1, ep 0)"
warnings=$(grep -E "^(HSDP|warning: HSDP)" "$TMP/uneven_run.log" || true)
echo "$warnings"
[[ $warnings == "warning: HSDP shard group of replica 0 spans nodes node-a, node-b: "* && $warnings != *$'\n'* ]] ||
  { cat "$TMP/uneven_run.log"; fail "1 + 3 slots: expected one warning, that replica 0 spans node-a and node-b"; }
echo "ok: 2 nodes x 2 ranks over TCP through launch/multinode.sh: node-local ranks, HSDP groups inside a node, the single process's losses and state"
