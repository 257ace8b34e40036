#!/usr/bin/env bash
# `moe export` of a trained checkpoint, read back without the safetensors package (json + struct,
# as the format is specified): header layout, names/shapes/dtypes against `moe inspect`, bf16 =
# f32 rounded to nearest even (and equal to torch's conversion where torch is installed),
# config.json fields, bad flags. Then the int8 export (I8 weights + per-row F32 scales within half
# a step of the f32 values, quantization_config, the val loss and tokenizer carried), and loading
# exports directly: greedy `moe generate` from the f32 export equals the checkpoint's, from int8
# it gives text, `moe eval` reads every export (f32: the checkpoint's loss exactly), and a missing
# folder, a truncated model.safetensors or a config.json with a wrong type exit 2 with one line.
# Usage: export.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
export MOE_NUM_THREADS=1
head -c 50000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" > /dev/null
"$MOE" train --config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set run.out_dir="$TMP/run" \
  --set train.steps=4 --set train.eval_every=0 --set train.eval_batches=2 > /dev/null
CK=$TMP/run/checkpoints/latest
"$MOE" export --checkpoint "$CK" --format safetensors --output "$TMP/bf16" > "$TMP/bf16.json"
"$MOE" export --checkpoint "$CK" --format safetensors --output "$TMP/f32" --dtype f32 > "$TMP/f32.json"
"$MOE" export --checkpoint "$CK" --format safetensors --output "$TMP/int8" --dtype int8 > "$TMP/int8.json"
"$MOE" inspect "$CK" --json > "$TMP/inspect.json"

"${PYTHON:-/usr/bin/python3}" - "$TMP" <<'PY'
import json, math, struct, sys
try:
    import torch
except ImportError:
    torch = None
tmp = sys.argv[1]

def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, "header not padded to 8 bytes"
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop("__metadata__")
    assert meta["format"] == "pt" and meta["step"] == "4", meta
    names = list(header)
    assert names == sorted(names), "tensors are not in name order"
    at = 0
    for name in names:  # back to back, in order, covering the data exactly
        b, e = header[name]["data_offsets"]
        assert b == at, (name, b, at)
        at = e
    assert at == len(data), (at, len(data))
    return header, data

def values(header, data, name):
    """The tensor's elements as f32 bit patterns (F32) or bf16 bit patterns (BF16)."""
    e = header[name]
    b, end = e["data_offsets"]
    fmt = {"F32": "I", "BF16": "H", "I8": "b"}[e["dtype"]]
    return struct.unpack(f"<{(end - b) // struct.calcsize(fmt)}{fmt}", data[b:end])

def bf16_rne(u):  # f32 bits -> bf16 bits, round to nearest even; NaN stays NaN
    if u & 0x7FFFFFFF > 0x7F800000:
        return (u >> 16) | 0x40
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF

h16, d16 = load(f"{tmp}/bf16/model.safetensors")
h32, d32 = load(f"{tmp}/f32/model.safetensors")
inspect = json.load(open(f"{tmp}/inspect.json"))
assert list(h16) == list(h32)
assert not any(n.startswith("optimizer.") for n in h16)
assert len(h16) == inspect["tensors"], (len(h16), inspect["tensors"])
assert sum(math.prod(e["shape"]) for e in h16.values()) == inspect["parameters"]
for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
             "model.layers.1.mlp.gate.e_score_correction_bias", "model.layers.1.mlp.experts.3.down_proj.weight"):
    assert name in h16, name
for name in h16:
    assert h16[name]["shape"] == h32[name]["shape"], name
    f = values(h32, d32, name)
    if name.endswith("e_score_correction_bias"):
        assert h16[name]["dtype"] == "F32" and values(h16, d16, name) == f, name
        continue
    assert h16[name]["dtype"] == "BF16", name
    assert list(values(h16, d16, name)) == [bf16_rne(u) for u in f], name
    if torch is not None:  # an independent implementation of the same rounding
        t = torch.tensor(f, dtype=torch.int64).to(torch.int32).view(torch.float32).to(torch.bfloat16)
        assert t.view(torch.int16).tolist() == [v - 65536 if v > 32767 else v for v in values(h16, d16, name)], name
assert h32["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"]["shape"] == [16 + 8, 32]  # [kv_lora + rope, hidden]

c = json.load(open(f"{tmp}/bf16/config.json"))
expect = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 32,
          "intermediate_size": 64, "moe_intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
          "num_key_value_heads": 2, "n_shared_experts": 1, "n_routed_experts": 4, "num_experts_per_tok": 2,
          "first_k_dense_replace": 1, "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
          "qk_rope_head_dim": 8, "v_head_dim": 8, "qk_head_dim": 16, "head_dim": 8, "vocab_size": 256,
          "max_position_embeddings": 32, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
          "norm_topk_prob": True, "rope_interleave": True, "tie_word_embeddings": False,
          "hidden_act": "silu", "torch_dtype": "bfloat16", "n_group": 1, "topk_group": 1}
for k, v in expect.items():
    assert c[k] == v, (k, c[k], v)
assert json.load(open(f"{tmp}/f32/config.json"))["torch_dtype"] == "float32"
assert c["moe"]["tokenizer"] == "byte" and c["moe"]["step"] == 4, c["moe"]
assert isinstance(c["moe"]["val_loss"], float) and c["moe"]["val_loss_step"] == 4, c["moe"]

# int8: every Linear weight (lm_head too) as I8 + "<module>.weight_scale" F32 [out]; the rest f32.
h8, d8 = load(f"{tmp}/int8/model.safetensors")
c8 = json.load(open(f"{tmp}/int8/config.json"))
q = c8["quantization_config"]
assert q["quant_method"] == "moe-int8-weight-only" and q["bits"] == 8 and q["symmetric"], q
f32_of = lambda bits: [struct.unpack("<f", struct.pack("<I", u))[0] for u in bits]
converted = 0
for name in h32:
    w = f32_of(values(h32, d32, name))
    if h8[name]["dtype"] == "F32":
        assert not (name.endswith("_proj.weight") or name.endswith("_mqa.weight") or name == "lm_head.weight"), name
        assert values(h8, d8, name) == values(h32, d32, name), name
        continue
    converted += 1
    assert h8[name]["dtype"] == "I8" and h8[name]["shape"] == h32[name]["shape"], name
    rows, cols = h32[name]["shape"]
    scale_name = name[: -len(".weight")] + ".weight_scale"
    assert h8[scale_name]["dtype"] == "F32" and h8[scale_name]["shape"] == [rows], scale_name
    s, qv = f32_of(values(h8, d8, scale_name)), values(h8, d8, name)
    for r in range(rows):
        row = w[r * cols:(r + 1) * cols]
        assert math.isclose(s[r], max(abs(x) for x in row) / 127, rel_tol=1e-6), (name, r)
        for k in range(cols):
            assert -127 <= qv[r * cols + k] <= 127
            assert abs(qv[r * cols + k] * s[r] - row[k]) <= s[r] / 2 * 1.0001, (name, r, k)
assert h8["lm_head.weight"]["dtype"] == "I8" and h8["model.embed_tokens.weight"]["dtype"] == "F32"
assert h8["model.layers.1.mlp.gate.weight"]["dtype"] == "F32"
assert len(h8) == len(h32) + converted
print(f"ok: {len(h16)} tensors, {inspect['parameters']} parameters{'' if torch else ' (no torch: rounding checked in Python only)'}")
PY

# Bad flags: one clear line, exit 2.
for bad in "--format gguf:expected safetensors" "--dtype fp16:expected bf16, f32 or int8"; do
  flag=${bad%%:*}; want=${bad#*:}
  set +e
  "$MOE" export --checkpoint "$CK" --output "$TMP/x" $flag > /dev/null 2> "$TMP/err"
  rc=$?
  set -e
  [ $rc -eq 2 ] && grep -q "$want" "$TMP/err" || { echo "FAIL: $flag: exit $rc: $(cat "$TMP/err")"; exit 1; }
done

# Loading exports: greedy generation from the f32 export is the checkpoint's; int8 gives text.
gen() { "$MOE" generate --checkpoint "$1" --prompt "ROMEO:" --max-tokens 24 --temperature 0; }
gen "$CK" > "$TMP/gen.ckpt"
gen "$TMP/f32" > "$TMP/gen.f32"
gen "$TMP/int8" > "$TMP/gen.int8"
cmp -s "$TMP/gen.ckpt" "$TMP/gen.f32" || { echo "FAIL: f32 export generates '$(cat "$TMP/gen.f32")', checkpoint '$(cat "$TMP/gen.ckpt")'"; exit 1; }
[ "$(wc -c < "$TMP/gen.int8")" -gt 20 ] || { echo "FAIL: int8 export generated '$(cat "$TMP/gen.int8")'"; exit 1; }
# moe eval on every export; the f32 export's loss is the checkpoint's.
for m in "$CK" "$TMP/f32" "$TMP/bf16" "$TMP/int8"; do
  "$MOE" eval --checkpoint "$m" --data "$TMP/data" --batches 2 --micro-batch 2 --json 2> /dev/null
done > "$TMP/eval.jsonl"
"${PYTHON:-/usr/bin/python3}" - "$TMP/eval.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4, rows
ck, f32, bf16, int8 = (r["loss"] for r in rows)
assert f32 == ck, (f32, ck)
for name, loss in (("bf16", bf16), ("int8", int8)):
    assert math.isfinite(loss) and abs(loss - ck) / ck < 0.02, (name, loss, ck)
assert rows[3]["run"] == "int8" and rows[3]["step"] == 4 and len(rows[3]["checksum"]) == 64, rows[3]
print(f"ok: eval loss checkpoint {ck:.5f}, f32 {f32:.5f}, bf16 {bf16:.5f}, int8 {int8:.5f}")
PY

# Bad exports: one clear line and exit 2 (moe eval: a warning naming it, the export skipped).
cp -r "$TMP/int8" "$TMP/trunc"
truncate -s -100 "$TMP/trunc/model.safetensors"
cp -r "$TMP/f32" "$TMP/badcfg"
"${PYTHON:-/usr/bin/python3}" -c "
import json, sys
p = sys.argv[1] + '/config.json'; c = json.load(open(p)); c['hidden_size'] = '32'; json.dump(c, open(p, 'w'))" "$TMP/badcfg"
for bad in "$TMP/nothing:nothing: no such checkpoint" \
           "$TMP/trunc:model.safetensors: tensor 'model.norm.weight': data_offsets" \
           "$TMP/badcfg:config.json: \"hidden_size\" is \"32\" (expected an integer)"; do
  dir=${bad%%:*}; want=${bad#*:}
  for cmd in generate eval; do
    set +e
    if [ $cmd = generate ]; then "$MOE" generate --checkpoint "$dir" --prompt x --max-tokens 2 > /dev/null 2> "$TMP/err"
    else "$MOE" eval --checkpoint "$dir" --data "$TMP/data" --batches 1 > /dev/null 2> "$TMP/err"; fi
    rc=$?
    set -e
    # moe eval skips an unreadable model with a warning, as a corrupt checkpoint in a sweep.
    if [ $cmd = eval ] && [ $rc -eq 0 ]; then grep -q "^warning: skipping checkpoint $dir: .*$want" "$TMP/err" ||
      { echo "FAIL: $cmd $dir: exit $rc: $(cat "$TMP/err")"; exit 1; }; continue; fi
    [ $rc -eq 2 ] && [ "$(grep -c . "$TMP/err")" -eq 1 ] && grep -qF "$want" "$TMP/err" ||
      { echo "FAIL: $cmd $dir: exit $rc: $(cat "$TMP/err")"; exit 1; }
  done
done
echo ok
