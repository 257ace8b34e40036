#!/usr/bin/env bash
# The README's demo: preprocess Tiny Shakespeare (byte tokenizer), train configs/shakespeare.yaml on
# the CPU, evaluate the final checkpoint (loss and the Shakespeare tasks), sample from it and plot
# the run. Usage: scripts/demo.sh [path/to/moe]
set -euo pipefail
cd "$(dirname "$0")/.."
MOE=${1:-build/moe}
OUT=runs/shakespeare
start=$(date +%s)

echo "== 1/6 preprocess data/tinyshakespeare.txt -> data/shakespeare"
"$MOE" preprocess --input data/tinyshakespeare.txt --tokenizer byte --output data/shakespeare --val-fraction 0.1 --overwrite

echo "== 2/6 train configs/shakespeare.yaml (fresh run in $OUT)"
rm -rf "$OUT"
"$MOE" train --config configs/shakespeare.yaml

echo "== 3/6 evaluate the final checkpoint on the validation split"
"$MOE" eval --checkpoint "$OUT/checkpoints/latest" --data data/shakespeare --split val --json | tee "$OUT/eval.json"

echo "== 4/6 downstream tasks (data/tasks, from the validation text; chance is 0.25)"
"$MOE" eval --checkpoint "$OUT/checkpoints/latest" --task data/tasks/shakespeare_line_end.jsonl \
  --task data/tasks/shakespeare_next_line.jsonl --out "$OUT/tasks.jsonl"

echo "== 5/6 generate"
"$MOE" generate --checkpoint "$OUT/checkpoints/latest" --prompt "ROMEO:" --max-tokens 240 --temperature 0.8 --seed 1

echo "== 6/6 plots of the run (PNG and SVG)"
"$MOE" plot "$OUT" "$OUT/tasks.jsonl" --out "$OUT/plots"

echo "== demo finished in $(( $(date +%s) - start )) s; metrics in $OUT/metrics.jsonl"
