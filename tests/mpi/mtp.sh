#!/usr/bin/env bash
# Multi-token prediction (model.mtp_depth 2, both MTP blocks MoE; λ scheduled) under FSDP and
# expert parallelism: 12 steps at (np 4, ep 2) give one process's per-step losses, MTP losses and
# grad norms to 1e-5 relative and its final parameters and AdamW moments to 1e-5; the step-6
# checkpoint of (np 4, ep 2) resumed at (np 2, ep 1) ends in the same state (resharding). Also:
# the step line and metrics.jsonl carry the MTP loss, `moe eval` and `moe export` take the
# checkpoint (DeepSeek-V3's MTP tensor names), and seq_len <= mtp_depth is a clear error.
# Usage: mtp.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
# Global batch 4 in every layout: micro_batch 1 x grad_accum (4 / np) x np.
common=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=12 --set train.eval_every=6
        --set checkpoint.every=6 --set checkpoint.keep_last=0 --set train.micro_batch=1 --set train.log_every=1
        --set model.mtp_depth=2 --set model.mtp_loss_weight=0.5 --set model.mtp_loss_weight_step=8
        --set model.mtp_loss_weight_final=0.2)
run() {  # run <np> <ep> <out_dir>
  local np=$1 ep=$2 out=$3
  timeout 120 mpirun -np "$np" "$MOE" train "${common[@]}" --set run.out_dir="$out" --set parallel.ep="$ep" \
    --set train.grad_accum=$((4 / np)) > "$out.log" 2>&1 || { echo "FAIL: np $np ep $ep"; cat "$out.log"; exit 1; }
}

"$MOE" train "${common[@]}" --set run.out_dir="$TMP/np1" --set train.grad_accum=4 > "$TMP/np1.log"
grep -q "^step .*/12 | loss [0-9.]* | mtp loss [0-9.]* |" "$TMP/np1.log" || { echo "FAIL: no MTP loss in the step line"; cat "$TMP/np1.log"; exit 1; }
run 4 2 "$TMP/np4_ep2"
"$MOE" inspect "$TMP/np1/checkpoints/step-00000012" --compare "$TMP/np4_ep2/checkpoints/step-00000012" --tolerance 1e-5 \
  > "$TMP/np4.cmp" || { echo "FAIL: np 4 ep 2 final state differs"; sort -k6 -g "$TMP/np4.cmp" | tail -5; exit 1; }

# Resharding: (np 4, ep 2)'s step 6 continued at (np 2, ep 1).
out="$TMP/np2_ep1"
mkdir -p "$out/checkpoints"
cp -r "$TMP/np4_ep2/checkpoints/step-00000006" "$out/checkpoints/"
ln -s step-00000006 "$out/checkpoints/latest"
head -n "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics_rows'])" \
           "$out/checkpoints/step-00000006/meta.json")" "$TMP/np4_ep2/metrics.jsonl" > "$out/metrics.jsonl"
run 2 1 "$out"
grep -q "resumed from .*step-00000006 at step 6" "$out.log" || { echo "FAIL: np 2 did not resume"; cat "$out.log"; exit 1; }
"$MOE" inspect "$TMP/np4_ep2/checkpoints/step-00000012" --compare "$out/checkpoints/step-00000012" --tolerance 1e-5 \
  > "$out.cmp" || { echo "FAIL: resumed at np 2 final state differs"; sort -k6 -g "$out.cmp" | tail -5; exit 1; }

python3 - "$TMP" <<'PY'
import json, os, sys
tmp = sys.argv[1]
rows = lambda name: [json.loads(l) for l in open(os.path.join(tmp, name, "metrics.jsonl"))]
ref = rows("np1")
train = [r for r in ref if "grad_norm" in r]
assert len(train) == 12 and all(r["mtp_loss"] > 0 for r in train), train
assert train[-1]["mtp_loss"] < train[0]["mtp_loss"], (train[0]["mtp_loss"], train[-1]["mtp_loss"])
assert all(len(r["expert_load"]) == 3 for r in train)  # 1 MoE block + 2 MTP MoE blocks
for name, first in (("np4_ep2", 0), ("np2_ep1", 6)):
    got = [r for r in rows(name) if r["step"] > first]
    want = [r for r in ref if r["step"] > first]
    assert [r["step"] for r in got] == [r["step"] for r in want], name
    worst = 0.0
    for a, b in zip(want, got):
        for key in ("loss", "mtp_loss", "grad_norm", "val_loss", "aux_loss"):
            if key in a:
                rel = abs(a[key] - b[key]) / max(abs(a[key]), 1e-12)
                assert rel <= 1e-5, (name, a["step"], key, a[key], b[key])
                worst = max(worst, rel)
    print(f"MTP {name} (from step {first}) against one process: worst relative difference {worst:.2e}")
PY

# Evaluation reads the checkpoint (main-model loss); export writes the release's MTP names.
"$MOE" eval --checkpoint "$TMP/np1/checkpoints/step-00000012" --data "$TMP/data" --batches 2 --micro-batch 2 --json > "$TMP/eval.json" 2> /dev/null ||
  { echo "FAIL: moe eval"; cat "$TMP/eval.json"; exit 1; }
"$MOE" export --checkpoint "$TMP/np1/checkpoints/step-00000012" --output "$TMP/hf" --dtype f32 > /dev/null
python3 - "$TMP/hf" <<'PY'
import json, struct, sys
d = sys.argv[1]
with open(d + "/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    names = set(json.loads(f.read(n))) - {"__metadata__"}
cfg = json.load(open(d + "/config.json"))
assert cfg["num_nextn_predict_layers"] == 2 and cfg["num_hidden_layers"] == 2, cfg
for layer in (2, 3):
    for t in ("eh_proj", "enorm", "hnorm", "shared_head.norm", "shared_head.head", "embed_tokens",
              "input_layernorm", "post_attention_layernorm", "self_attn.o_proj", "mlp.gate", "mlp.experts.0.up_proj"):
        assert f"model.layers.{layer}.{t}.weight" in names, (layer, t)
print(f"export: {len(names)} tensors with the MTP modules as model.layers.2 and model.layers.3")
PY
# The export loads back (the per-module copies accepted): the f32 export evaluates to the
# checkpoint's loss exactly, the int8 one loads too.
"$MOE" eval --checkpoint "$TMP/hf" --data "$TMP/data" --batches 2 --micro-batch 2 --json > "$TMP/eval_hf.json" 2> /dev/null ||
  { echo "FAIL: moe eval of the export"; cat "$TMP/eval_hf.json"; exit 1; }
"$MOE" export --checkpoint "$TMP/np1/checkpoints/step-00000012" --output "$TMP/hf8" --dtype int8 > /dev/null
"$MOE" eval --checkpoint "$TMP/hf8" --data "$TMP/data" --batches 2 --micro-batch 2 --json > "$TMP/eval_hf8.json" 2> /dev/null ||
  { echo "FAIL: moe eval of the int8 export"; cat "$TMP/eval_hf8.json"; exit 1; }
python3 - "$TMP" <<'PY'
import json, sys
loss = lambda f: [json.loads(l) for l in open(f"{sys.argv[1]}/{f}") if l.strip()][-1]["loss"]
a, b, c = loss("eval.json"), loss("eval_hf.json"), loss("eval_hf8.json")
assert a == b and abs(c - a) < 0.05 * a, (a, b, c)
print(f"eval loss: checkpoint {a:.6f}, f32 export {b:.6f}, int8 export {c:.6f}")
PY

# seq_len must exceed mtp_depth: one line naming the keys, exit 2.
set +e
"$MOE" train "${common[@]}" --set run.out_dir="$TMP/bad" --set data.seq_len=2 > "$TMP/bad.log" 2>&1
rc=$?
set -e
[ $rc = 2 ] && grep -q "model.mtp_depth is 2 but data.seq_len is 2" "$TMP/bad.log" ||
  { echo "FAIL: seq_len 2 with mtp_depth 2 (rc $rc)"; cat "$TMP/bad.log"; exit 1; }
echo "mtp.sh: ok"
