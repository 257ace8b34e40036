#!/usr/bin/env bash
# The precision benchmark of issue 9: train configs/shakespeare.yaml from the same seed and data in
# fp32, bf16 and fp8 for the same number of steps, one run after the other, then print the final
# train and validation losses and the gaps as a markdown table. A benchmark, not a test: it prints
# numbers and never fails on them. Runs go to runs/precision-<p>-s<seed> (replaced).
# Usage: bench/precision.sh [steps]   (default 1000)
#   env MOE (binary), PRECISIONS (default "fp32 bf16 fp8"), SEEDS (run.seed values, default 1337:
#   several seeds give the mean gap and its spread), JOBS (runs at once, default 1), THREADS
#   (train.threads per run, default 0 = all cores), KEEP=1 (reuse finished runs instead of replacing them)
set -euo pipefail
cd "$(dirname "$0")/.."
MOE=${MOE:-build/moe}
STEPS=${1:-1000}
PRECISIONS=${PRECISIONS:-fp32 bf16 fp8}
SEEDS=${SEEDS:-1337}
JOBS=${JOBS:-1}
THREADS=${THREADS:-0}
KEEP=${KEEP:-0}
[ -x "$MOE" ] || { echo "build first: make build (no $MOE)" >&2; exit 2; }

# The demo's data (scripts/demo.sh): byte tokenizer, the last 10% held out.
[ -f data/shakespeare/train/manifest.json ] || [ -f data/shakespeare/manifest.json ] ||
  "$MOE" preprocess --input data/tinyshakespeare.txt --tokenizer byte --output data/shakespeare --val-fraction 0.1 --overwrite

one_run() {  # precision seed
  local p=$1 seed=$2 out=runs/precision-$1-s$2
  if [ "$KEEP" = 1 ] && [ -f "$out/eval_fp32.json" ]; then return; fi
  rm -rf "$out" "$out.log"; mkdir -p runs
  local start; start=$(date +%s)
  "$MOE" train --config configs/shakespeare.yaml --set train.steps="$STEPS" --set train.precision="$p" \
    --set run.seed="$seed" --set train.threads="$THREADS" --set run.out_dir="$out" --set checkpoint.every=0 > "$out.log"
  # The final checkpoint evaluated again by `moe eval`, which always computes in fp32.
  "$MOE" eval --checkpoint "$out/checkpoints/latest" --data data/shakespeare --split val --json > "$out/eval_fp32.json"
  echo "== $p seed $seed: $(( $(date +%s) - start )) s" >&2
}
export -f one_run
export MOE STEPS THREADS KEEP
for seed in $SEEDS; do for p in $PRECISIONS; do echo "$p $seed"; done; done | xargs -P "$JOBS" -L 1 bash -c 'set -euo pipefail; one_run "$0" "$1"'

python3 - "$PRECISIONS" "$SEEDS" <<'PY'
import json, statistics, sys
precisions, seeds = sys.argv[1].split(), sys.argv[2].split()
rows = {}
for seed in seeds:
    for p in precisions:
        d = f"runs/precision-{p}-s{seed}"
        m = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
        steps = [r for r in m if "loss" in r]
        evals = [r for r in m if "val_loss" in r]
        last100 = [r["loss"] for r in steps if r["step"] > steps[-1]["step"] - 100]
        ev = json.load(open(f"{d}/eval_fp32.json"))
        rows[p, seed] = dict(step=steps[-1]["step"], train=steps[-1]["loss"], train100=sum(last100) / len(last100),
                             val=evals[-1]["val_loss"], val32=ev["loss"], rss=max(r.get("peak_rss_mib", 0) for r in steps),
                             tps=sorted(r["tokens_per_s"] for r in steps)[len(steps) // 2])
print("| precision | seed | steps | train loss (last step) | train loss (mean of last 100 steps) | val loss (at training precision) | val loss (`moe eval`, fp32) | peak RSS MiB | median tokens/s |")
print("|---|---|---|---|---|---|---|---|---|")
for (p, seed), r in rows.items():
    print(f"| {p} | {seed} | {r['step']} | {r['train']:.4f} | {r['train100']:.4f} | {r['val']:.4f} | {r['val32']:.4f} | {r['rss']:.0f} | {r['tps']:.0f} |")
print()
# The gap of each seed (same seed = same initialisation and data order), then their mean and spread.
keys = (("train100", "train (last 100)"), ("val", "val"), ("val32", "val (fp32 eval)"))
print("| gap | " + " | ".join(f"{name}: per seed" for _, name in keys) + " | " + " | ".join(f"{name}: mean ± sd" for _, name in keys) + " |")
print("|---|" + "---|" * (2 * len(keys)))
for a, b in (("bf16", "fp32"), ("fp8", "bf16"), ("fp8", "fp32")):
    if a not in precisions or b not in precisions:
        continue
    per, summary = [], []
    for k, _ in keys:
        g = [100 * (rows[a, s][k] - rows[b, s][k]) / rows[b, s][k] for s in seeds]
        per.append(", ".join(f"{x:+.2f}%" for x in g))
        sd = statistics.stdev(g) if len(g) > 1 else float("nan")
        summary.append(f"{statistics.mean(g):+.2f}% ± {sd:.2f}")
    print(f"| {a} vs {b} | " + " | ".join(per) + " | " + " | ".join(summary) + " |")
PY
