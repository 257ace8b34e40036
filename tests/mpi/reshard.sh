#!/usr/bin/env bash
# Resharding: a checkpoint saved by (np 4, ep 2) continues at (np 1), (np 2, ep 1), (np 2, ep 2)
# and (np 4, ep 4); each continuation's losses and grad norms match the original run's own
# continuation to 1e-5 relative, and so do its final parameters and AdamW moments. Checkpoints hold
# logical tensors, so the layout that saved them does not matter. Usage: reshard.sh <moe> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
# Global batch 4 in every layout: micro_batch 1 x grad_accum (4 / np) x np.
common=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=20 --set train.eval_every=5
        --set checkpoint.every=10 --set checkpoint.keep_last=0 --set train.micro_batch=1)
run() {  # run <np> <ep> <out_dir>
  local np=$1 ep=$2 out=$3
  timeout 120 mpirun -np "$np" "$MOE" train "${common[@]}" --set run.out_dir="$out" --set parallel.ep="$ep" \
    --set train.grad_accum=$((4 / np)) > "$out.log" 2>&1 || { echo "FAIL: np $np ep $ep"; cat "$out.log"; exit 1; }
}

run 4 2 "$TMP/orig"
for layout in "1 1" "2 1" "2 2" "4 4"; do
  set -- $layout
  out="$TMP/np$1_ep$2"
  mkdir -p "$out/checkpoints"
  cp -r "$TMP/orig/checkpoints/step-00000010" "$out/checkpoints/"
  ln -s step-00000010 "$out/checkpoints/latest"
  head -n "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics_rows'])" \
             "$out/checkpoints/step-00000010/meta.json")" "$TMP/orig/metrics.jsonl" > "$out/metrics.jsonl"
  run "$1" "$2" "$out"
  grep -q "resumed from .*step-00000010 at step 10" "$out.log" || { echo "FAIL: np $1 ep $2 did not resume"; cat "$out.log"; exit 1; }
  "$MOE" inspect "$TMP/orig/checkpoints/step-00000020" --compare "$out/checkpoints/step-00000020" --tolerance 1e-5 \
    > "$out.cmp" || { echo "FAIL: np $1 ep $2 final state differs"; sort -k6 -g "$out.cmp" | tail -5; exit 1; }
done

python3 - "$TMP" <<'PY'
import json, os, sys
tmp = sys.argv[1]
rows = lambda name: [json.loads(l) for l in open(os.path.join(tmp, name, "metrics.jsonl"))]
after = lambda rs: [r for r in rs if r["step"] > 10]
ref = after(rows("orig"))
assert any("val_loss" in r for r in ref) and len(ref) >= 10, ref
for name in ("np1_ep1", "np2_ep1", "np2_ep2", "np4_ep4"):
    got = after(rows(name))
    assert [r["step"] for r in got] == [r["step"] for r in ref], (name, [r["step"] for r in got])
    worst = 0.0
    for a, b in zip(ref, got):
        for key in ("loss", "grad_norm", "val_loss"):
            if key in a:
                rel = abs(a[key] - b[key]) / max(abs(a[key]), 1e-12)
                assert rel <= 1e-5, (name, a["step"], key, a[key], b[key])
                worst = max(worst, rel)
    print(f"saved at np 4 ep 2, continued at {name}: worst relative difference over steps 11-20 {worst:.2e}")
PY
