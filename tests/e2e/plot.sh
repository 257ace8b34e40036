#!/usr/bin/env bash
# `moe plot`: two tiny runs overlaid, moe eval task rows of their checkpoints and a sweep results
# file -> every figure as a valid PNG and SVG; bad input -> one error line, exit 2.
# Usage: plot.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v gnuplot > /dev/null || fail "gnuplot is missing (make deps installs gnuplot-nox)"

tiny=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.steps=20 --set checkpoint.every=10)
"$MOE" train "${tiny[@]}" --set run.out_dir="$TMP/run_a" > /dev/null
"$MOE" train "${tiny[@]}" --set run.out_dir="$TMP/run_b" --set train.lr=3e-3 > /dev/null
cat > "$TMP/task.jsonl" <<'JSONL'
{"context": "ROMEO:\nO Romeo, Romeo! wherefore art thou Rom", "choices": ["eo?\n", "xq!\n"], "gold": 0}
{"context": "First Citizen:\nSpeak, ", "choices": ["speak.\n", "zzzzz.\n", "qqqqq.\n"], "gold": 0}
JSONL
"$MOE" eval --checkpoint "$TMP/run_a/checkpoints" --task "$TMP/task.jsonl" --json > "$TMP/tasks.jsonl"
[ "$(wc -l < "$TMP/tasks.jsonl")" = 2 ] || fail "expected task rows at steps 10 and 20"
# Sweep rows as `moe eval --out` writes them (run, step, dataset, split, loss, top1, top5).
for s in 10 20; do
  for d in shakespeare other; do
    echo "{\"run\": \"run_a\", \"step\": $s, \"tokens_seen\": $((s * 128)), \"dataset\": \"$d\", \"split\": \"val\", \"loss\": 3.$((30 - s)), \"top1\": 0.$s, \"top5\": 0.$((s + 40))}"
  done
done > "$TMP/sweep.jsonl"

"$MOE" plot "$TMP/run_a" "$TMP/run_b/metrics.jsonl" "$TMP/tasks.jsonl" "$TMP/sweep.jsonl" --out "$TMP/plots" --log y \
  > "$TMP/paths"
for f in loss_vs_step loss_vs_tokens lr grad_norm tokens_per_s expert_load_run_a expert_load_run_b eval_loss \
         eval_accuracy tasks; do
  for ext in png svg; do grep -qx "$TMP/plots/$f.$ext" "$TMP/paths" || fail "$f.$ext not listed"; done
done
[ "$(wc -l < "$TMP/paths")" = 20 ] || fail "expected 20 files, got: $(cat "$TMP/paths")"
python3 - "$TMP/paths" <<'PY'
import struct, sys, xml.etree.ElementTree as ET
for path in open(sys.argv[1]).read().split():
    data = open(path, "rb").read()
    if path.endswith(".png"):
        assert data[:8] == b"\x89PNG\r\n\x1a\n", path
        w, h = struct.unpack(">II", data[16:24])             # IHDR: width, height
        assert w >= 800 and h >= 500 and len(data) > 10000, (path, w, h, len(data))
    else:
        root = ET.fromstring(data)
        assert root.tag == "{http://www.w3.org/2000/svg}svg", (path, root.tag)
        assert len(list(root.iter())) > 50, path              # something drawn, not an empty canvas
PY
grep -q "run_b train" "$TMP/plots/plot.gp" || fail "run_b is not overlaid"
grep -q "set logscale y" "$TMP/plots/plot.gp" || fail "--log y not applied"

# Bad input: one error line, exit 2.
expect() {  # expect <message> <args...>
  local msg=$1; shift
  set +e
  "$MOE" plot "$@" --out "$TMP/bad" > /dev/null 2> "$TMP/err"
  local rc=$?
  set -e
  [ $rc = 2 ] || fail "exit $rc for plot $* (expected 2)"
  [ "$(wc -l < "$TMP/err")" = 1 ] || fail "more than one error line: $(cat "$TMP/err")"
  grep -qF -- "$msg" "$TMP/err" || fail "expected '$msg', got: $(cat "$TMP/err")"
}
expect "$TMP/missing.jsonl: cannot open" "$TMP/missing.jsonl"
mkdir "$TMP/nothing"
expect "$TMP/nothing/metrics.jsonl: cannot open" "$TMP/nothing"
: > "$TMP/empty.jsonl"
expect "$TMP/empty.jsonl: no rows to plot" "$TMP/empty.jsonl"
echo '{"hello": 1}' > "$TMP/other.jsonl"
expect "$TMP/other.jsonl: no rows to plot" "$TMP/other.jsonl"
{ head -3 "$TMP/run_a/metrics.jsonl"; echo '{"step": 4, "loss": '; tail -1 "$TMP/run_a/metrics.jsonl"; } > "$TMP/torn.jsonl"
expect "$TMP/torn.jsonl:4: malformed JSON" "$TMP/torn.jsonl"
echo '[1, 2]' > "$TMP/array.jsonl"
expect "$TMP/array.jsonl:1: not a JSON object" "$TMP/array.jsonl"
expect "--log: 'z' (expected x, y or xy)" "$TMP/run_a" --log z
expect "moe plot: no inputs" 
# A last line still being written (no newline yet) is skipped: plotting a live run works.
{ cat "$TMP/run_a/metrics.jsonl"; printf '{"step": 21, "lo'; } > "$TMP/live.jsonl"
"$MOE" plot "$TMP/live.jsonl" --out "$TMP/live" > /dev/null || fail "a torn last line stopped the plot"
# No gnuplot on PATH: a clear error.
mkdir "$TMP/empty_path"
set +e
PATH="$TMP/empty_path" "$MOE" plot "$TMP/run_a" --out "$TMP/nognuplot" > /dev/null 2> "$TMP/err"; rc=$?
set -e
[ $rc = 2 ] && grep -q "gnuplot not found on PATH" "$TMP/err" || fail "missing gnuplot: exit $rc, $(cat "$TMP/err")"
echo "plot: OK"
