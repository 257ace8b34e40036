#!/usr/bin/env bash
# The precision benchmark of issue 9: train configs/shakespeare.yaml from the same seed and data in
# fp32, bf16 and fp8 for the same number of steps, one run after the other, then print the final
# train and validation losses and the gaps as a markdown table. A benchmark, not a test: it prints
# numbers and never fails on them. Runs go to runs/precision-<p> (replaced).
# Usage: bench/precision.sh [steps]   (default 1000)   env MOE (binary), PRECISIONS (default "fp32 bf16 fp8")
set -euo pipefail
cd "$(dirname "$0")/.."
MOE=${MOE:-build/moe}
STEPS=${1:-1000}
PRECISIONS=${PRECISIONS:-fp32 bf16 fp8}
[ -x "$MOE" ] || { echo "build first: make build (no $MOE)" >&2; exit 2; }

# The demo's data (scripts/demo.sh): byte tokenizer, 5% held out.
[ -f data/shakespeare/train/manifest.json ] || [ -f data/shakespeare/manifest.json ] ||
  "$MOE" preprocess --input data/tinyshakespeare.txt --tokenizer byte --output data/shakespeare --val-fraction 0.05 --overwrite

for p in $PRECISIONS; do
  out=runs/precision-$p
  rm -rf "$out" "$out.log"; mkdir -p runs
  echo "== $p: $MOE train --config configs/shakespeare.yaml --set train.steps=$STEPS --set train.precision=$p --set run.out_dir=$out" >&2
  start=$(date +%s)
  "$MOE" train --config configs/shakespeare.yaml --set train.steps="$STEPS" --set train.precision="$p" \
    --set run.out_dir="$out" --set checkpoint.every=0 > "$out.log"
  echo "   $(( $(date +%s) - start )) s" >&2
  # The final checkpoint evaluated again by `moe eval`, which always computes in fp32.
  "$MOE" eval --checkpoint "$out/checkpoints/latest" --data data/shakespeare --split val --json > "$out/eval_fp32.json"
done

python3 - $PRECISIONS <<'PY'
import json, sys
rows = {}
for p in sys.argv[1:]:
    m = [json.loads(l) for l in open(f"runs/precision-{p}/metrics.jsonl")]
    steps = [r for r in m if "loss" in r]
    evals = [r for r in m if "val_loss" in r]
    last100 = [r["loss"] for r in steps if r["step"] > steps[-1]["step"] - 100]
    ev = json.load(open(f"runs/precision-{p}/eval_fp32.json"))
    rows[p] = dict(step=steps[-1]["step"], train=steps[-1]["loss"], train100=sum(last100) / len(last100),
                   val=evals[-1]["val_loss"], val32=ev["loss"], rss=max(r.get("peak_rss_mib", 0) for r in steps),
                   tps=sorted(r["tokens_per_s"] for r in steps)[len(steps) // 2])
def gap(a, b, k):
    return f"{100 * (rows[a][k] - rows[b][k]) / rows[b][k]:+.3f}%" if a in rows and b in rows else "-"
print("| precision | steps | train loss (last step) | train loss (mean of last 100 steps) | val loss (at training precision) | val loss (`moe eval`, fp32) | peak RSS MiB | median tokens/s |")
print("|---|---|---|---|---|---|---|---|")
for p, r in rows.items():
    print(f"| {p} | {r['step']} | {r['train']:.4f} | {r['train100']:.4f} | {r['val']:.4f} | {r['val32']:.4f} | {r['rss']:.0f} | {r['tps']:.0f} |")
print()
print("| gap | train (last step) | train (last 100) | val | val (fp32 eval) |")
print("|---|---|---|---|---|")
for a, b in (("bf16", "fp32"), ("fp8", "bf16"), ("fp8", "fp32")):
    print(f"| {a} vs {b} | {gap(a, b, 'train')} | {gap(a, b, 'train100')} | {gap(a, b, 'val')} | {gap(a, b, 'val32')} |")
PY
