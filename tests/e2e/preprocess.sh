#!/usr/bin/env bash
# moe preprocess end to end on a slice of Tiny Shakespeare: the shard files and manifests, identical
# output for any --workers, .jsonl input, and the error cases (exit code 2, one "error: ..." line).
# usage: bash tests/e2e/preprocess.sh <path-to-moe> <source-dir>
set -euo pipefail
MOE=$1
SRC=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# expect_error PATTERN CMD...: CMD exits 2 and stderr is one line "error: ..." containing PATTERN.
expect_error() {
  local pattern=$1 rc=0
  shift
  "$@" >"$tmp/stdout" 2>"$tmp/stderr" || rc=$?
  [ "$rc" = 2 ] || fail "$* exited $rc, expected 2 (stderr: $(cat "$tmp/stderr"))"
  [ "$(wc -l <"$tmp/stderr")" = 1 ] || fail "$*: expected one line on stderr, got: $(cat "$tmp/stderr")"
  grep -q '^error: ' "$tmp/stderr" || fail "$*: stderr does not start with 'error: ': $(cat "$tmp/stderr")"
  grep -qF -- "$pattern" "$tmp/stderr" || fail "$*: stderr lacks '$pattern': $(cat "$tmp/stderr")"
}

# 100000 bytes + EOS = 100001 tokens; val = ceil(0.1 * 100001) = 10001 tokens, cut inside the text.
mkdir "$tmp/corpus"
head -c 100000 "$SRC/data/tinyshakespeare.txt" >"$tmp/corpus/shakespeare.txt"
summary=$("$MOE" preprocess --input "$tmp/corpus" --tokenizer byte --output "$tmp/data" --val-fraction 0.1 --workers 1)
echo "$summary" | grep -q '"train_tokens":90000' || fail "summary: $summary"
echo "$summary" | grep -q '"val_tokens":10001' || fail "summary: $summary"
[ "$(echo "$summary" | wc -l)" = 1 ] || fail "summary is not one line"

for split in train val; do
  d=$tmp/data/$split
  for f in manifest.json shard-00000.bin shard-00000.idx; do [ -f "$d/$f" ] || fail "missing $split/$f"; done
  grep -q '"format_version": 1' "$d/manifest.json" || fail "$split manifest: format_version"
  grep -q '"dtype": "u16"' "$d/manifest.json" || fail "$split manifest: dtype"
  grep -q '"tokenizer": "byte"' "$d/manifest.json" || fail "$split manifest: tokenizer"
  grep -q "\"sha256_bin\": \"$(sha256sum "$d/shard-00000.bin" | cut -d' ' -f1)\"" "$d/manifest.json" ||
    fail "$split manifest: sha256_bin does not match the shard"
  grep -q "\"sha256_idx\": \"$(sha256sum "$d/shard-00000.idx" | cut -d' ' -f1)\"" "$d/manifest.json" ||
    fail "$split manifest: sha256_idx does not match the index"
done
[ "$(stat -c %s "$tmp/data/train/shard-00000.bin")" = 180000 ] || fail "train shard size"
[ "$(stat -c %s "$tmp/data/val/shard-00000.bin")" = 20002 ] || fail "val shard size"
# u16 little-endian bytes of ASCII text: dropping the zero high bytes (and the final EOS) gives the text back.
cat "$tmp/data/train/shard-00000.bin" "$tmp/data/val/shard-00000.bin" | tr -d '\000' >"$tmp/roundtrip.txt"
cmp -s "$tmp/roundtrip.txt" "$tmp/corpus/shakespeare.txt" || fail "train + val tokens are not the text"
[ ! -e "$tmp/data.tmp" ] || fail "temporary folder left behind"

# The same bytes for any worker count; --overwrite replaces an earlier output.
"$MOE" preprocess --input "$tmp/corpus" --tokenizer byte --output "$tmp/data2" --val-fraction 0.1 --workers 2 >/dev/null
diff -r "$tmp/data" "$tmp/data2" >/dev/null || fail "--workers 1 and 2 differ"
"$MOE" preprocess --input "$tmp/corpus" --tokenizer byte --output "$tmp/data2" --val-fraction 0.2 --overwrite >/dev/null
grep -q '"tokens": 20001' "$tmp/data2/val/manifest.json" || fail "--overwrite did not replace the output"

# .jsonl documents under another key.
printf '{"body": "To be"}\n{"body": "or not"}\n' >"$tmp/docs.jsonl"
summary=$("$MOE" preprocess --input "$tmp/docs.jsonl" --tokenizer byte --output "$tmp/j" --text-key body --val-fraction 0)
echo "$summary" | grep -q '"train_tokens":13' || fail "jsonl summary: $summary"

# Errors: one line, exit code 2, nothing written.
expect_error "$tmp/nope: no such file or directory" \
  "$MOE" preprocess --input "$tmp/nope" --tokenizer byte --output "$tmp/e1"
expect_error "already exists (pass --overwrite to replace it)" \
  "$MOE" preprocess --input "$tmp/corpus" --tokenizer byte --output "$tmp/data"
mkdir "$tmp/empty"
expect_error "no .txt or .jsonl files found" "$MOE" preprocess --input "$tmp/empty" --tokenizer byte --output "$tmp/e2"
printf '{"text": "fine"}\nnot json\n' >"$tmp/bad.jsonl"
expect_error "$tmp/bad.jsonl:2: not valid JSON" "$MOE" preprocess --input "$tmp/bad.jsonl" --tokenizer byte --output "$tmp/e3"
expect_error "--val-fraction 0.9: out of range" \
  "$MOE" preprocess --input "$tmp/corpus" --tokenizer byte --output "$tmp/e4" --val-fraction 0.9
expect_error "gpt2.json: cannot read tokenizer file" "$MOE" preprocess --input "$tmp/corpus" --tokenizer gpt2.json --output "$tmp/e5"
expect_error "missing required flag --output" "$MOE" preprocess --input "$tmp/corpus" --tokenizer byte
for e in e1 e2 e3 e4 e5; do [ ! -e "$tmp/$e" ] || fail "$e was written despite the error"; done
[ -z "$(ls -d "$tmp"/*.tmp 2>/dev/null)" ] || fail "temporary folder left behind after an error"

# Compressed inputs, --split-docs and --format megatron; inspect reports bytes/token.
mkdir "$tmp/packed"
gzip -c "$tmp/corpus/shakespeare.txt" >"$tmp/packed/shakespeare.txt.gz"
"$MOE" preprocess --input "$tmp/packed" --tokenizer byte --output "$tmp/gz" --val-fraction 0.1 >/dev/null
diff -r "$tmp/data" "$tmp/gz" >/dev/null || fail ".txt.gz output differs from .txt"
summary=$("$MOE" preprocess --input "$tmp/corpus" --tokenizer byte --output "$tmp/paras" --split-docs --val-fraction 0)
docs=$(echo "$summary" | sed 's/.*"documents":\([0-9]*\).*/\1/')
[ "$docs" -gt 100 ] || fail "--split-docs gave $docs documents: $summary"
"$MOE" preprocess --input "$tmp/corpus" --tokenizer byte --output "$tmp/mega" --val-fraction 0.1 --format megatron >/dev/null
for split in train val; do
  for f in data_text_document.bin data_text_document.idx manifest.json; do [ -f "$tmp/mega/$split/$f" ] || fail "megatron: no $split/$f"; done
done
[ "$(head -c 9 "$tmp/mega/train/data_text_document.idx" | od -An -c | tr -d ' ')" = 'MMIDIDX\0\0' ] || fail "megatron: magic"
cmp -s "$tmp/mega/train/data_text_document.bin" "$tmp/data/train/shard-00000.bin" || fail "megatron train tokens differ from the shards"
"$MOE" inspect "$tmp/data" >"$tmp/inspect.txt" || fail "inspect: $(cat "$tmp/inspect.txt")"
grep -q "bytes/token" "$tmp/inspect.txt" || fail "inspect prints no bytes/token: $(cat "$tmp/inspect.txt")"
grep -Eq '^train +shards +90,000 +1 +1 +90,000 +1\.000' "$tmp/inspect.txt" || fail "inspect train row: $(cat "$tmp/inspect.txt")"
"$MOE" inspect "$tmp/mega" --json | grep -q '"format":"megatron"' || fail "inspect megatron"
"$MOE" inspect "$tmp/mega/train/data_text_document" --json | grep -q '"tokens":90000' || fail "inspect a bare Megatron prefix"
"$MOE" train --config "$SRC/configs/tiny.yaml" --set data.path="$tmp/mega" --set train.steps=2 \
  --set run.out_dir="$tmp/run-mega" >"$tmp/train.log" 2>&1 || fail "moe train on --format megatron data: $(tail -3 "$tmp/train.log")"

# Progress lines: plain lines in a log, an in-place line on a terminal.
"$MOE" preprocess --input "$tmp/corpus" --tokenizer byte --output "$tmp/prog" --progress-every 0.000001 \
  >/dev/null 2>"$tmp/progress.txt"
grep -Eq '^preprocess: [0-9.]+ / 0\.10 MB \([0-9.]+%\), [0-9.]+ MB/s, [0-9.]+ M tokens/s, ETA' "$tmp/progress.txt" ||
  fail "no progress line: $(cat "$tmp/progress.txt")"
if command -v script >/dev/null; then
  script -qec "'$MOE' preprocess --input '$tmp/corpus' --tokenizer byte --output '$tmp/tty' --progress-every 0.000001" \
    /dev/null >"$tmp/tty.txt" </dev/null
  grep -q $'\rpreprocess: ' "$tmp/tty.txt" || fail "no in-place progress line on a terminal: $(cat -A "$tmp/tty.txt" | head -3)"
fi

# More bad input: a malformed line counted with --skip-bad-lines, a truncated .gz, a bad --format.
printf '{"text": "fine"}\nnot json\n{"other": 1}\n' >"$tmp/bad2.jsonl"
summary=$("$MOE" preprocess --input "$tmp/bad2.jsonl" --tokenizer byte --output "$tmp/skip" --skip-bad-lines --val-fraction 0 2>"$tmp/stderr")
echo "$summary" | grep -q '"bad_lines":2' || fail "--skip-bad-lines summary: $summary"
grep -q "skipped 2 malformed line(s); the first: $tmp/bad2.jsonl:2: not valid JSON" "$tmp/stderr" || fail "skip report: $(cat "$tmp/stderr")"
expect_error "$tmp/bad2.jsonl:2: not valid JSON" "$MOE" preprocess --input "$tmp/bad2.jsonl" --tokenizer byte --output "$tmp/e6"
printf '{"other": 1}\n' >"$tmp/nokey.jsonl"
expect_error "$tmp/nokey.jsonl:1: no string field \"text\"" "$MOE" preprocess --input "$tmp/nokey.jsonl" --tokenizer byte --output "$tmp/e9"
head -c 1000 "$tmp/packed/shakespeare.txt.gz" >"$tmp/cut.txt.gz"
expect_error "cut.txt.gz: truncated gzip file" "$MOE" preprocess --input "$tmp/cut.txt.gz" --tokenizer byte --output "$tmp/e7"
expect_error "--format csv: unknown" "$MOE" preprocess --input "$tmp/corpus" --tokenizer byte --output "$tmp/e8" --format csv
for e in e6 e7 e8 e9; do [ ! -e "$tmp/$e" ] && [ ! -e "$tmp/$e.tmp" ] || fail "$e was written despite the error"; done

"$MOE" preprocess --help | grep -q -- "--val-fraction" || fail "--help"
echo "preprocess e2e: ok"
