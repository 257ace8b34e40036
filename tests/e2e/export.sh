#!/usr/bin/env bash
# `moe export` of a trained checkpoint, read back without the safetensors package (json + struct,
# as the format is specified): header layout, names/shapes/dtypes against `moe inspect`, bf16 =
# f32 rounded to nearest even (and equal to torch's conversion where torch is installed),
# config.json fields, bad flags.
# Usage: export.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
export MOE_NUM_THREADS=1
head -c 50000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" > /dev/null
"$MOE" train --config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set run.out_dir="$TMP/run" \
  --set train.steps=4 --set train.eval_every=0 > /dev/null
CK=$TMP/run/checkpoints/latest
"$MOE" export --checkpoint "$CK" --format safetensors --output "$TMP/bf16" > "$TMP/bf16.json"
"$MOE" export --checkpoint "$CK" --format safetensors --output "$TMP/f32" --dtype f32 > "$TMP/f32.json"
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
    fmt = {"F32": "I", "BF16": "H"}[e["dtype"]]
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
print(f"ok: {len(h16)} tensors, {inspect['parameters']} parameters{'' if torch else ' (no torch: rounding checked in Python only)'}")
PY

# Bad flags: one clear line, exit 2.
for bad in "--format gguf:expected safetensors" "--dtype fp16:expected bf16 or f32"; do
  flag=${bad%%:*}; want=${bad#*:}
  set +e
  "$MOE" export --checkpoint "$CK" --output "$TMP/x" $flag > /dev/null 2> "$TMP/err"
  rc=$?
  set -e
  [ $rc -eq 2 ] && grep -q "$want" "$TMP/err" || { echo "FAIL: $flag: exit $rc: $(cat "$TMP/err")"; exit 1; }
done
echo ok
