#!/usr/bin/env bash
# Side by side on this machine: `moe bench train` on configs/bench-cpu.yaml against the PyTorch peer
# (bench/torch_ref.py, a copy of ../shared/bench/torch_ref.py) on the same shapes, threads and
# batch, then the ratio. A benchmark, not a test: it prints numbers and never fails on them.
# Usage: bench/cpu_vs_torch.sh [threads...]   (default: 1 2)   env STEPS (default 10), MOE (binary)
set -euo pipefail
cd "$(dirname "$0")/.."
MOE=${MOE:-build/moe}
STEPS=${STEPS:-10}
THREADS=("$@"); [ ${#THREADS[@]} -gt 0 ] || THREADS=(1 2)
[ -x "$MOE" ] || { echo "build first: make build (no $MOE)" >&2; exit 2; }

# The peer runs on Debian's PyTorch with OpenBLAS (not the reference BLAS).
if ! /usr/bin/python3 -c "import torch" 2>/dev/null || ! dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q "ok installed"; then
  echo "installing python3-torch libopenblas0-pthread for the peer ..." >&2
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-torch libopenblas0-pthread >&2
fi

for t in "${THREADS[@]}"; do
  ours=$("$MOE" bench train --config configs/bench-cpu.yaml --steps "$STEPS" --threads "$t")
  # The peer as the issue runs it (OMP_NUM_THREADS only: Debian's PyTorch then also lets
  # OpenBLAS start its own threads, oversubscribing the cores) and tuned (OpenBLAS single-threaded
  # inside PyTorch's OpenMP threads), each with its peak RSS (torch_ref.py reports GPU memory only).
  run_peer() {
    env "$@" /usr/bin/python3 -c '
import json, resource, runpy, sys, io, contextlib
sys.argv = ["torch_ref.py", "--device", "cpu", "--config", "shakespeare", "--steps", sys.argv[1]]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    runpy.run_path("bench/torch_ref.py", run_name="__main__")
row = json.loads(out.getvalue().strip().splitlines()[-1])
row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(row))' "$STEPS"
  }
  peer=$(run_peer OMP_NUM_THREADS=$t)
  tuned=$(run_peer OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=1)
  echo "$ours"
  echo "$peer"
  echo "$tuned"
  /usr/bin/python3 - "$ours" "$peer" "$tuned" "$t" <<'PY'
import json, sys
ours, peer, tuned = (json.loads(a) for a in sys.argv[1:4])
print(json.dumps({"threads": int(sys.argv[4]), "moe_tokens_per_s": ours["tokens_per_s"],
                  "torch_tokens_per_s": peer["tokens_per_s"], "speedup": round(ours["tokens_per_s"] / peer["tokens_per_s"], 2),
                  "torch_tuned_tokens_per_s": tuned["tokens_per_s"],
                  "speedup_vs_tuned": round(ours["tokens_per_s"] / tuned["tokens_per_s"], 2),
                  "moe_peak_rss_mib": ours["peak_rss_mib"], "torch_peak_rss_mib": peer["peak_rss_mib"]}))
PY
done
