#!/usr/bin/env bash
# The training loop's reporting features (docs/cli.md, "moe train"), on configs/tiny.yaml:
#   - train.schedule wsd: the lr in metrics.jsonl is the peak through the stable phase and follows
#     the decay shape over the last decay_steps steps down to min_lr at the final step;
#   - the step line's accuracy and metrics.jsonl's `accuracy` (a fraction in [0, 1]);
#   - `top experts L1: ...` every train.expert_report_every steps, with metrics rows whose counts
#     sum to every routed token of the interval;
#   - samples every train.sample_every steps in samples.jsonl, equal to `moe generate` on the
#     checkpoint of the same step with the same seed and temperature;
#   - all of them on, the trained state is bitwise the state of a run with them off.
# Usage: train_features.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
fail() { echo "FAIL: $*" >&2; exit 1; }
base=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=20 --set train.eval_every=0
      --set checkpoint.every=10 --set checkpoint.keep_last=0)

# WSD with every shape: the curve in metrics.jsonl against its formula.
for shape in linear cosine sqrt; do
  "$MOE" train "${base[@]}" --set run.out_dir="$TMP/wsd-$shape" --set train.schedule=wsd --set train.decay_steps=6 \
    --set train.decay_shape=$shape > "$TMP/wsd-$shape.log" || fail "wsd $shape run failed"
  python3 - "$TMP/wsd-$shape/metrics.jsonl" $shape <<'PY' || fail "wsd $shape lr curve"
import json, math, sys
rows = {r["step"]: r["lr"] for r in map(json.loads, open(sys.argv[1])) if "lr" in r}
shape, lr, lo, warmup, steps, decay = sys.argv[2], 1e-3, 1e-4, 2, 20, 6
for done in range(1, steps + 1):
    s = done - 1
    if s < warmup: want = lr * (s + 1) / warmup
    elif s < steps - decay: want = lr
    else:
        p = (s - (steps - decay) + 1) / decay
        want = {"linear": lr - (lr - lo) * p, "cosine": lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * p)),
                "sqrt": lr - (lr - lo) * math.sqrt(p)}[shape]
    assert abs(rows[done] - want) <= 1e-12 * lr, (done, rows[done], want)
assert rows[14] == lr and rows[15] < lr and abs(rows[20] - lo) < 1e-15, rows
PY
done
# decay_steps outside [1, steps - warmup]: one line naming the key, exit 2.
set +e
out=$("$MOE" train "${base[@]}" --set run.out_dir="$TMP/bad" --set train.schedule=wsd --set train.decay_steps=19 2>&1)
rc=$?
set -e
[ $rc -eq 2 ] || fail "decay_steps 19 of 20 - 2 should exit 2 (got $rc)"
grep -q "train.decay_steps is 19.*1 <= decay_steps <= steps - warmup = 18" <<<"$out" || fail "unclear message: $out"

# Reference without the features, then the same run with all of them.
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/off" > "$TMP/off.log"
"$MOE" train "${base[@]}" --set run.out_dir="$TMP/on" --set train.expert_report_every=5 --set train.sample_every=10 \
  --set 'train.sample_prompt="ROMEO:"' --set train.sample_tokens=20 --set train.sample_temperature=0.7 > "$TMP/on.log"
for step in 00000010 00000020; do
  cmp "$TMP/off/checkpoints/step-$step/state.h5" "$TMP/on/checkpoints/step-$step/state.h5" \
    || fail "samples / reports changed the trained state at step $step"
done
grep -aq "^step     20/20 | loss [0-9.]* | acc [0-9.]*% | lr" "$TMP/on.log" || fail "no accuracy on the step line"
[ "$(grep -ac '^top experts L1: [0-9]:[0-9]*% [0-9]:[0-9]*% [0-9]:[0-9]*% [0-9]:[0-9]*%$' "$TMP/on.log")" = 4 ] \
  || fail "expected 4 top-expert lines (steps 5, 10, 15, 20)"
[ "$(grep -ac '^sample step ' "$TMP/on.log")" = 2 ] || fail "expected samples at steps 10 and 20"
python3 - "$TMP/on" <<'PY' || fail "metrics.jsonl / samples.jsonl"
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")]
acc = [r["accuracy"] for r in rows if "loss" in r]
assert len(acc) == 20 and all(0 <= a <= 1 for a in acc) and acc[-1] > 0, acc
reports = [r for r in rows if "expert_counts" in r]
assert [r["step"] for r in reports] == [5, 10, 15, 20], reports
for r in reports:  # every token of 5 steps of 4 x 32, top-2, one MoE layer (block 1)
    assert r["expert_counts_layers"] == [1] and r["expert_counts_steps"] == 5, r
    assert sum(r["expert_counts"][0]) == 5 * 4 * 32 * 2, r
samples = [json.loads(l) for l in open(f"{sys.argv[1]}/samples.jsonl")]
assert [(s["step"], s["prompt"]) for s in samples] == [(10, "ROMEO:"), (20, "ROMEO:")], samples
PY
# Each sample is what `moe generate` makes from that step's checkpoint (seed run.seed = 1337).
echo '{"prompt": "ROMEO:"}' > "$TMP/prompt.jsonl"
for step in 10 20; do
  "$MOE" generate --checkpoint "$TMP/on/checkpoints/step-000000$step" --prompts "$TMP/prompt.jsonl" --seed 1337 \
    --temperature 0.7 --max-tokens 20 > "$TMP/gen-$step.json"
  python3 - "$TMP/gen-$step.json" "$TMP/on/samples.jsonl" $step <<'PY' || fail "sample at step $step differs from moe generate"
import json, sys
gen = json.loads(open(sys.argv[1]).read())
sample = [s for s in map(json.loads, open(sys.argv[2])) if s["step"] == int(sys.argv[3])][0]
assert gen["text"] == sample["text"] and len(gen["text"]) > 0, (gen, sample)
PY
done
echo ok
