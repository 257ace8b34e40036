#!/usr/bin/env bash
# `moe import --hf DIR --output CKPT_DIR`: a DeepseekV3 folder as a step-0 weights-only checkpoint.
# Round trip: export --dtype f32 of a trained checkpoint, imported, equals the checkpoint bitwise
# (inspect --compare --weights-only --tolerance 0), and generate / eval / checkpoint.init_from use
# it; so does a model with MTP. The same tensors split over two shards with model.safetensors.index.json import identically.
# A hand-built FP8 E4M3 folder (random codes, 128x128 block scales, shapes that are not multiples
# of 128) imports to exactly code value x block scale (read back through export --dtype f32).
# Bad input — a missing shard, a tensor in no shard, a tensor of the wrong shape, rope_scaling,
# FP8 blocks other than 128x128 —
# is one line and exit 2.
# Usage: hf_import.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
PY=${PYTHON:-/usr/bin/python3}
fail() { echo "FAIL: $*" >&2; exit 1; }
# dense_inter 160: matrices with two 128-row or 128-column blocks for the FP8 case.
base=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set model.dense_inter=160
      --set train.eval_every=0 --set train.eval_batches=2 --set train.warmup=0)
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/run" --set train.steps=4 > /dev/null
CK=$TMP/run/checkpoints/latest
"$MOE" export --checkpoint "$CK" --format safetensors --output "$TMP/f32" --dtype f32 > /dev/null

# Round trip.
"$MOE" import --hf "$TMP/f32" --output "$TMP/imp" > "$TMP/imp.json"
grep -q '"output":"'"$TMP"'/imp/step-00000000"' "$TMP/imp.json" || fail "import line: $(cat "$TMP/imp.json")"
"$MOE" inspect "$CK" --compare "$TMP/imp" --weights-only --tolerance 0 > "$TMP/cmp.txt" \
  || fail "round trip differs: $(tail -1 "$TMP/cmp.txt")"
grep -q "largest relative difference 0.000e+00" "$TMP/cmp.txt" || fail "$(tail -1 "$TMP/cmp.txt")"
set +e; "$MOE" inspect "$CK" --compare "$TMP/imp" > /dev/null 2>&1; rc=$?; set -e
[ $rc -eq 2 ] || fail "without --weights-only the optimizer tensors should be missing (exit 2), got $rc"
gen() { "$MOE" generate --checkpoint "$1" --prompt "ROMEO:" --max-tokens 16 --temperature 0; }
[ "$(gen "$CK")" = "$(gen "$TMP/imp")" ] || fail "generate from the import differs from the checkpoint's"
"$MOE" eval --checkpoint "$TMP/imp" --data "$TMP/data" > /dev/null 2>&1 || fail "eval of the import"
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/ft" --set train.steps=1 --set checkpoint.init_from="$TMP/imp" \
  > "$TMP/ft.log" || fail "init_from the import"
grep -q "initialized from the weights of $TMP/imp/step-00000000 (step 0" "$TMP/ft.log" || fail "no init note"

# Sharded (and, below, FP8 and broken) folders built from the f32 export.
"$PY" - "$TMP" <<'PY'
import json, os, random, shutil, struct, sys
tmp = sys.argv[1]

def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n]); header.pop("__metadata__", None)
    data = raw[8 + n:]
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}

def save(path, tensors):
    header, at = {}, 0
    for k, (dt, shape, b) in tensors.items():
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [at, at + len(b)]}; at += len(b)
    h = json.dumps(header).encode(); h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for _, _, b in tensors.values(): f.write(b)

def folder(name, tensors, config_edit=None):
    os.makedirs(f"{tmp}/{name}")
    cfg = json.load(open(f"{tmp}/f32/config.json"))
    if config_edit: config_edit(cfg)
    json.dump(cfg, open(f"{tmp}/{name}/config.json", "w"))
    if tensors is not None: save(f"{tmp}/{name}/model.safetensors", tensors)

t = load(f"{tmp}/f32/model.safetensors")
names = sorted(t)
def sharded(name, drop_from_map=None):
    folder(name, None)
    half = len(names) // 2
    parts = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    wm = {}
    for f, ns in parts.items():
        ns = [k for k in ns if k != drop_from_map]  # in no shard, and not in the index
        save(f"{tmp}/{name}/{f}", {k: t[k] for k in ns})
        wm.update({k: f for k in ns})
    wm.pop(drop_from_map, None)
    json.dump({"metadata": {}, "weight_map": wm}, open(f"{tmp}/{name}/model.safetensors.index.json", "w"))
sharded("sharded")
sharded("no_shard"); os.remove(f"{tmp}/no_shard/model-00002-of-00002.safetensors")
sharded("unmapped", drop_from_map="lm_head.weight")

# FP8: every 2-D weight as random E4M3 codes (no NaN) with random block scales; the expected
# f32 values (code value x scale, rounded to f32 once) go to expected.safetensors.
def e4m3(c):
    s = -1.0 if c & 0x80 else 1.0; e = (c >> 3) & 15; m = c & 7
    return s * (m * 2.0 ** -9 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
rng = random.Random(7)
fp8, expected, blocked = {}, {}, 0
for k in names:
    dt, shape, b = t[k]
    if len(shape) != 2 or k.endswith("e_score_correction_bias"):
        fp8[k] = expected[k] = t[k]; continue
    r, c = shape; br, bc = -(-r // 128), -(-c // 128)
    blocked += br * bc > 1
    scales = [f32(rng.uniform(1e-3, 1e-1)) for _ in range(br * bc)]
    codes = bytes(rng.choice([x for x in range(256) if x & 0x7F != 0x7F]) for _ in range(r * c))
    vals = [f32(e4m3(codes[i * c + j]) * scales[(i // 128) * bc + j // 128]) for i in range(r) for j in range(c)]
    fp8[k] = ("F8_E4M3", shape, codes)
    fp8[k + "_scale_inv"] = ("F32", [br, bc], struct.pack(f"<{br * bc}f", *scales))
    expected[k] = ("F32", shape, struct.pack(f"<{r * c}f", *vals))
assert blocked >= 3, "no matrix spans several 128x128 blocks"
folder("fp8", fp8)
save(f"{tmp}/expected.safetensors", expected)

# Broken: a tensor of the wrong shape (same bytes), and rope_scaling.
wrong = dict(t); dt, shape, b = wrong["model.embed_tokens.weight"]
wrong["model.embed_tokens.weight"] = (dt, shape[::-1], b)
folder("wrong_shape", wrong)
folder("rope", t, lambda c: c.update(rope_scaling={"type": "yarn", "factor": 4.0}))
folder("blocks64", t, lambda c: c.update(quantization_config={"quant_method": "fp8", "weight_block_size": [64, 64]}))
PY

"$MOE" import --hf "$TMP/sharded" --output "$TMP/imp_sharded" > /dev/null
"$MOE" inspect "$CK" --compare "$TMP/imp_sharded" --weights-only --tolerance 0 > /dev/null || fail "sharded import differs"

# With MTP: the export's copies of embed_tokens / shared_head.head in the MTP layer are dropped.
"$MOE" train "${base[@]}" --set model.mtp_depth=1 --set run.out_dir="$TMP/mtp" --set train.steps=2 > /dev/null
"$MOE" export --checkpoint "$TMP/mtp/checkpoints/latest" --format safetensors --output "$TMP/mtp_f32" --dtype f32 > /dev/null
"$MOE" import --hf "$TMP/mtp_f32" --output "$TMP/imp_mtp" > /dev/null
"$MOE" inspect "$TMP/mtp/checkpoints/latest" --compare "$TMP/imp_mtp" --weights-only --tolerance 0 > /dev/null \
  || fail "MTP round trip differs"

"$MOE" import --hf "$TMP/fp8" --output "$TMP/imp_fp8" > /dev/null
"$MOE" export --checkpoint "$TMP/imp_fp8" --format safetensors --output "$TMP/fp8_back" --dtype f32 > /dev/null
"$PY" - "$TMP/expected.safetensors" "$TMP/fp8_back/model.safetensors" <<'PY' || fail "FP8 import is not its dequantised values"
import json, struct, sys
def load(path):
    raw = open(path, "rb").read(); (n,) = struct.unpack("<Q", raw[:8])
    h = json.loads(raw[8:8 + n]); h.pop("__metadata__", None); d = raw[8 + n:]
    return {k: d[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert sorted(a) == sorted(b), set(a) ^ set(b)
bad = [k for k in a if a[k] != b[k]]
assert not bad, bad
PY

expect_error() {  # expect_error <pattern> <hf folder>
  set +e; out=$("$MOE" import --hf "$2" --output "$TMP/bad_out" 2>&1); rc=$?; set -e
  [ $rc -eq 2 ] || fail "expected exit 2 for $2, got $rc: $out"
  [ "$(wc -l <<<"$out")" = 1 ] || fail "expected one line: $out"
  grep -q -- "$1" <<<"$out" || fail "expected '$1' in: $out"
}
expect_error "no_shard/model-00002-of-00002.safetensors: missing (a shard named in .*model.safetensors.index.json" "$TMP/no_shard"
expect_error "model.safetensors.index.json's shards: no tensor 'lm_head.weight'" "$TMP/unmapped"
expect_error "wrong_shape/model.safetensors: tensor 'model.embed_tokens.weight' has shape \[32,256\] (expected \[256,32\]" \
  "$TMP/wrong_shape"
expect_error "rope/config.json: \"rope_scaling\" is .* (expected null: RoPE scaling is not implemented)" "$TMP/rope"
expect_error "blocks64/config.json: quantization_config .* (expected quant_method \"fp8\" with fmt \"e4m3\" and weight_block_size \[128, 128\]" "$TMP/blocks64"
expect_error "nowhere: not a folder" "$TMP/nowhere"
[ ! -e "$TMP/bad_out/latest" ] || fail "a failed import left a checkpoint"
set +e; out=$("$MOE" import --hf "$TMP/f32" --output "$TMP/imp" 2>&1); rc=$?; set -e
[ $rc -eq 2 ] && grep -q "already holds checkpoints" <<<"$out" || fail "import over a checkpoint: $rc $out"
echo "hf_import: ok"
