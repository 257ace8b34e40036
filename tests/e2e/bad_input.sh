#!/usr/bin/env bash
# Bad input gets one clear line starting with "error:" and exit code 2 — never a crash or a hang.
# Usage: bad_input.sh <moe binary> <source dir>
set -uo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
export MOE_NUM_THREADS=1
failures=0

# expect_error <pattern> <command...>: exit code 2, stderr one line "error: ..." matching pattern.
expect_error() {
  local pattern=$1; shift
  timeout 60 "$@" > "$TMP/out" 2> "$TMP/err"
  local rc=$?
  if [ $rc -ne 2 ] || [ "$(wc -l < "$TMP/err")" -ne 1 ] || ! grep -q "^error: .*$pattern" "$TMP/err"; then
    echo "FAIL (rc=$rc): $*" >&2; echo "  expected: error: ...$pattern" >&2; sed 's/^/  got: /' "$TMP/err" >&2
    failures=$((failures + 1))
  fi
}

head -c 50000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" > /dev/null
tiny=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set run.out_dir="$TMP/run")

# config
expect_error "$TMP/nope.yaml: cannot read config file" "$MOE" train --config "$TMP/nope.yaml"
printf 'model:\n  hidden: [1, 2\n' > "$TMP/malformed.yaml"
expect_error "malformed.yaml:[0-9]*: malformed YAML" "$MOE" train --config "$TMP/malformed.yaml"
printf 'model:\n  hidden: 32\n  hiden: 32\n' > "$TMP/unknown.yaml"
expect_error "unknown.yaml:3: unknown key 'model.hiden'" "$MOE" train --config "$TMP/unknown.yaml"
printf 'model:\n  layers: four\n' > "$TMP/type.yaml"
expect_error "type.yaml:2: model.layers is 'four' (expected an integer)" "$MOE" train --config "$TMP/type.yaml"
printf 'model:\n  routed_experts: 4\n  experts_per_token: 6\n' > "$TMP/incons.yaml"
expect_error "incons.yaml:3: .*experts_per_token" "$MOE" train --config "$TMP/incons.yaml"
printf 'model:\n  qk_rope_dim: 7\n' > "$TMP/rope.yaml"
expect_error "rope.yaml:2: .*qk_rope_dim" "$MOE" train --config "$TMP/rope.yaml"
expect_error "--set train.lr" "$MOE" train "${tiny[@]}" --set train.lr=fast
expect_error "--set train.precision: train.precision is 'fp16' (expected fp32 | bf16 | fp8)" "$MOE" train "${tiny[@]}" --set train.precision=fp16
expect_error "unknown flag --confg" "$MOE" train --confg x.yaml

# data
expect_error "$TMP/missing: no such data folder" "$MOE" train "${tiny[@]}" --set data.path="$TMP/missing"
expect_error "no such file or directory" "$MOE" preprocess --input "$TMP/none.txt" --tokenizer byte --output "$TMP/d2"
cp -r "$TMP/data" "$TMP/corrupt"
truncate -s 1000 "$TMP/corrupt/train/shard-00000.bin"
expect_error "shard-00000.bin: .*corrupt or truncated" "$MOE" train "${tiny[@]}" --set data.path="$TMP/corrupt"
cp -r "$TMP/data" "$TMP/flipped"
printf 'X' | dd of="$TMP/flipped/val/shard-00000.bin" bs=1 seek=10 conv=notrunc 2> /dev/null
expect_error "shard-00000.bin" "$MOE" inspect "$TMP/flipped"

# checkpoints
expect_error "$TMP/no-ckpt: no such checkpoint" "$MOE" eval --checkpoint "$TMP/no-ckpt" --data "$TMP/data"
expect_error "$TMP/no-ckpt: no such checkpoint" "$MOE" generate --checkpoint "$TMP/no-ckpt" --prompt hi
expect_error "no such checkpoint" "$MOE" train "${tiny[@]}" --set checkpoint.resume="$TMP/no-ckpt"
expect_error "--top-p" "$MOE" generate --checkpoint "$TMP/no-ckpt" --prompt hi --top-p 2

# comparing checkpoints (moe inspect --compare) and the fault-injection switch
"$MOE" train "${tiny[@]}" --set train.steps=2 --set train.eval_every=0 --set run.out_dir="$TMP/c1" > /dev/null
"$MOE" train "${tiny[@]}" --set train.steps=2 --set train.eval_every=0 --set run.out_dir="$TMP/c2" --set model.expert_inter=16 > /dev/null
"$MOE" train "${tiny[@]}" --set train.steps=2 --set train.eval_every=0 --set run.out_dir="$TMP/c3" --set model.tie_embeddings=true > /dev/null
expect_error "model.layers.1.mlp.experts.0.down_proj.weight: shapes differ between" "$MOE" inspect "$TMP/c1/checkpoints" --compare "$TMP/c2/checkpoints"
expect_error "has no tensor lm_head.weight" "$MOE" inspect "$TMP/c1/checkpoints" --compare "$TMP/c3/checkpoints"
expect_error "inspect: --tolerance needs --compare OTHER" "$MOE" inspect "$TMP/c1/checkpoints" --tolerance 1e-5
expect_error "MOE_FAULT_INJECT='one:3' (expected RANK:STEP" env MOE_FAULT_INJECT=one:3 "$MOE" train "${tiny[@]}" --set run.out_dir="$TMP/fault"

# device cuda where there is no GPU (or no CUDA backend in this build); on a GPU machine the gpu
# tests and `moe bench train --device cuda` cover it instead
if ! nvidia-smi -L > /dev/null 2>&1; then
  expect_error "device cuda: \(no usable GPU\|this build has no CUDA backend\)" "$MOE" train "${tiny[@]}" --set device=cuda
  expect_error "device cuda: \(no usable GPU\|this build has no CUDA backend\)" "$MOE" bench train "${tiny[@]}" --device cuda --steps 1
fi
expect_error "--device: device 'tpu' (expected auto, cpu or cuda)" "$MOE" bench train "${tiny[@]}" --device tpu --steps 1
expect_error "--device: device 'tpu' (expected auto, cpu or cuda)" "$MOE" eval --checkpoint "$TMP/c1/checkpoints" --data "$TMP/data" --device tpu
expect_error "--device: device 'tpu' (expected auto, cpu or cuda)" "$MOE" generate --checkpoint "$TMP/c1/checkpoints" --prompt hi --device tpu

# usage
expect_error "unknown command" "$MOE" trian
[ $failures -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo ok
