#!/usr/bin/env bash
# checkpoint.init_from: a run starts from a checkpoint's weights with a fresh optimizer, step 0
# and its own schedule (fine-tuning). With lr 0 (and no bias update) one step leaves the weights
# as loaded, so they must equal the source checkpoint's exactly while the moments are new. A
# checkpoint already in out_dir takes precedence (resume: auto), and says so; a missing or
# corrupt init_from, or one of another model shape, is one clear line and exit 2.
# Usage: init_from.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
fail() { echo "FAIL: $*" >&2; exit 1; }
base=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.eval_every=0 --set checkpoint.every=0
      --set train.warmup=0)
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/a" --set train.steps=20 > /dev/null
src="$TMP/a/checkpoints/step-00000020"

frozen=(--set train.steps=1 --set train.lr=0 --set train.min_lr=0 --set model.router.bias_update_rate=0)
"$MOE" train "${base[@]}" "${frozen[@]}" --set run.out_dir="$TMP/b" --set checkpoint.init_from="$src" > "$TMP/b.log"
grep -q "initialized from the weights of $src (step 20; fresh optimizer, step 0" "$TMP/b.log" || fail "no init note"
grep -q "^step      1/1 " "$TMP/b.log" || fail "the fine-tuning run did not start at step 0"
"$MOE" inspect "$src" --compare "$TMP/b/checkpoints/latest" --json > "$TMP/cmp.json"
python3 - "$TMP/cmp.json" "$TMP/b/checkpoints/latest/meta.json" <<'PY' || fail "weights or optimizer not as expected"
import json, sys
t = {x["name"]: x["max_abs_diff"] for x in json.load(open(sys.argv[1]))["tensors"]}
weights = {k: v for k, v in t.items() if not k.startswith("optimizer.")}
moments = {k: v for k, v in t.items() if k.startswith("optimizer.")}
assert weights and all(v == 0 for v in weights.values()), [k for k, v in weights.items() if v]
assert any(k.endswith("e_score_correction_bias") for k in weights), "router biases not compared"
assert moments and any(v > 0 for v in moments.values()), "the moments are the source's: not a fresh optimizer"
assert json.load(open(sys.argv[2]))["optimizer_steps"] == 1
PY
# Fine-tuning from a trained model starts lower than from scratch.
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/c" --set train.steps=1 --set checkpoint.init_from="$src" > "$TMP/c.log"
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/d" --set train.steps=1 > "$TMP/d.log"
loss() { sed -n 's/^step      1\/1 | loss \([0-9.]*\) .*/\1/p' "$1"; }
python3 -c "import sys; a, b = map(float, sys.argv[1:]); assert a < b - 0.1, (a, b)" "$(loss "$TMP/c.log")" "$(loss "$TMP/d.log")" \
  || fail "init_from did not start from the trained weights"

# A checkpoint in out_dir wins over init_from (resume: auto).
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/c" --set train.steps=2 --set checkpoint.init_from="$src" > "$TMP/c2.log"
grep -q "resumed from .*step-00000001 at step 1" "$TMP/c2.log" || fail "did not resume"
grep -q "checkpoint.init_from $src is not used: resuming from .* takes precedence" "$TMP/c2.log" || fail "no precedence note"

expect_error() {  # expect_error <pattern> <args...>
  local pattern=$1; shift
  set +e
  out=$("$MOE" train "${base[@]}" --set train.steps=1 "$@" 2>&1)
  rc=$?
  set -e
  [ $rc -eq 2 ] || fail "expected exit 2 for $*, got $rc: $out"
  [ "$(wc -l <<<"$out")" = 1 ] || fail "expected one line: $out"
  grep -q "$pattern" <<<"$out" || fail "expected '$pattern' in: $out"
}
expect_error "checkpoint.init_from: $TMP/nowhere: no such checkpoint" \
  --set run.out_dir="$TMP/e1" --set checkpoint.init_from="$TMP/nowhere"
cp -r "$src" "$TMP/corrupt"
python3 - "$TMP/corrupt/state.h5" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[len(b) // 2] ^= 0xff; open(sys.argv[1], "wb").write(b)
PY
expect_error "checkpoint.init_from: .*state.h5" --set run.out_dir="$TMP/e2" --set checkpoint.init_from="$TMP/corrupt"
expect_error "has another model shape (model.hidden: 32 -> 48" \
  --set run.out_dir="$TMP/e3" --set checkpoint.init_from="$src" --set model.hidden=48
echo ok
