#!/usr/bin/env bash
# train.precision end to end on the tiny config: fp32, bf16 and fp8 runs from the same seed and data
# all learn, name their precision in the log, and end near each other; a checkpoint trained in one
# precision resumes in another (precision is not part of the model section).
# Usage: precision.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export MOE_NUM_THREADS=2

head -c 200000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" --val-fraction 0.1 > /dev/null
common=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=30
        --set train.eval_every=0 --set checkpoint.every=0)
for p in fp32 bf16 fp8; do
  "$MOE" train "${common[@]}" --set run.out_dir="$TMP/$p" --set train.precision=$p > "$TMP/$p.log"
  head -1 "$TMP/$p.log" | grep -Eq "\| $p( \(.*\))? \| " || fail "$p: the header does not name the precision"
done
# bf16 names the GEMM that runs it; MOE_BF16_GEMM=emulated (what a CPU without AVX512-BF16 runs)
# says so and gives the same numbers up to f32 round-off.
head -1 "$TMP/bf16.log" | grep -Eq "\| bf16 \((onednn .* avx512_core_bf16|emulated \(.*\))\) \| " ||
  fail "bf16: the header does not name its GEMM: $(head -1 "$TMP/bf16.log")"
MOE_BF16_GEMM=emulated "$MOE" train "${common[@]}" --set run.out_dir="$TMP/bf16_emulated" --set train.precision=bf16 \
  > "$TMP/bf16_emulated.log"
head -1 "$TMP/bf16_emulated.log" | grep -q "| bf16 (emulated (MOE_BF16_GEMM=emulated)) | " ||
  fail "the emulated bf16 run does not say so: $(head -1 "$TMP/bf16_emulated.log")"
python3 - "$TMP" <<'PY'
import json, sys
def rows(p): return [json.loads(l) for l in open(f"{sys.argv[1]}/{p}/metrics.jsonl")]
native, emulated = rows("bf16"), rows("bf16_emulated")
first = [r["loss"] for r in native if "loss" in r][0], [r["loss"] for r in emulated if "loss" in r][0]
assert abs(first[0] - first[1]) < 1e-4 * first[1], first   # step 1: the same numbers up to round-off
val = [r["val_loss"] for r in native if "val_loss" in r][-1], [r["val_loss"] for r in emulated if "val_loss" in r][-1]
assert abs(val[0] - val[1]) < 0.02 * val[1], val           # 30 steps later: the same run
print(f"bf16 native vs emulated: first loss {first[0]:.6f} / {first[1]:.6f}, final val {val[0]:.4f} / {val[1]:.4f}")
PY
# moe bench gemm: a line per (layer, op) with both precisions' GFLOP/s, then the ceilings.
"$MOE" bench gemm --config "$SRC/configs/tiny.yaml" --trials 1 > "$TMP/gemm.jsonl"
python3 - "$TMP/gemm.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
shapes, ceiling = rows[:-1], rows[-1]["ceiling"]
assert {r["op"] for r in shapes} == {"forward", "dgrad", "wgrad"}, shapes
assert any(r["layer"] == "expert.up_proj" for r in shapes), shapes
assert all(r["f32_gflops"] > 0 and r["bf16_gflops"] > 0 for r in shapes), shapes
assert ceiling["f32_gflops"] > 0 and ceiling["bf16_gflops"] > 0 and ceiling["bf16_gemm"], ceiling
print(f"bench gemm: {len(shapes)} shapes, ceiling f32 {ceiling['f32_gflops']} bf16 {ceiling['bf16_gflops']} GFLOP/s")
PY
out=$("$MOE" bench gemm --config "$SRC/configs/tiny.yaml" --trials 0 2>&1) && fail "--trials 0 was accepted"
grep -q -- "--trials: 0 (expected >= 1)" <<< "$out" || fail "--trials 0: $out"
python3 - "$TMP" <<'PY'
import json, sys, math
def losses(p):
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/{p}/metrics.jsonl")]
    return [r["loss"] for r in rows if "loss" in r], [r["val_loss"] for r in rows if "val_loss" in r][-1]
ref, ref_val = losses("fp32")
for p in ("bf16", "fp8"):
    l, val = losses(p)
    assert abs(l[0] - math.log(256)) < 0.3, (p, l[0])
    assert l[-1] < l[0] - 0.3, (p, l[0], l[-1])                 # it learns
    assert abs(val - ref_val) < 0.03 * ref_val, (p, val, ref_val)  # and ends near fp32
    print(f"{p}: final val loss {val:.4f} vs fp32 {ref_val:.4f}")
PY
# An fp32 checkpoint continues in fp8.
"$MOE" train "${common[@]}" --set run.out_dir="$TMP/fp32" --set train.steps=35 --set train.precision=fp8 > "$TMP/resume.log"
grep -q "resumed from .*step-00000030 at step 30" "$TMP/resume.log" || fail "fp8 did not resume the fp32 checkpoint"
echo "ok"
