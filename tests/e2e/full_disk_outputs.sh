#!/usr/bin/env bash
# The outputs besides checkpoints and shards (checkpoint_faults.sh and preprocess_resume.sh cover
# those) on a full or read-only filesystem, with real small tmpfs mounts:
#  - metrics.jsonl on a full disk: one warning naming the file and the reason, training goes on and
#    its checkpoints (on another filesystem) are written;
#  - `moe eval --out` past a size limit (a quota; ulimit -f): exit 2 naming the file, the rows
#    already there intact;
#  - a run folder that became read-only: resuming stops with exit 2 naming the file and the reason,
#    and the committed checkpoint is intact (it resumes once the folder is writable again).
# mount needs root (or CAP_SYS_ADMIN); skipped with a note where it is refused.
# Usage: full_disk_outputs.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d)
MOUNTS=()
cleanup() {
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
mount_tmpfs() {  # mount_tmpfs DIR SIZE; newest mount first in MOUNTS (unmounted in that order)
  mkdir -p "$1"
  mount -t tmpfs -o size="$2" tmpfs "$1" 2>/dev/null || return 1
  MOUNTS=("$1" "${MOUNTS[@]}")
}
fill() {  # fill DIR: a filler file (which moe ignores) takes every free byte of DIR's filesystem
  dd if=/dev/zero of="$1/filler" bs=4k status=none 2>/dev/null || true
}
export MOE_NUM_THREADS=1
OUT=$TMP/run
if ! mount_tmpfs "$OUT" 64k; then
  echo "skip: cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)"
  exit 77
fi
mount_tmpfs "$OUT/checkpoints" 8m || fail "second tmpfs"
head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" > /dev/null
args=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.eval_every=0
      --set checkpoint.every=2 --set checkpoint.keep_last=0 --set train.log_every=1 --set run.out_dir="$OUT")
"$MOE" train "${args[@]}" --set train.steps=2 > "$TMP/a.log"
[ -f "$OUT/checkpoints/step-00000002/COMMITTED" ] || fail "no step 2 checkpoint"

# 1. metrics.jsonl on a full disk: the filler leaves one free page, which the rewrite of config.yaml
# at start needs for a moment (its .tmp, then the old one is freed); the rows of 14 steps need more.
fill "$OUT"
truncate -s -4096 "$OUT/filler"
"$MOE" train "${args[@]}" --set train.steps=16 > "$TMP/b.log" 2> "$TMP/b.err" ||
  { cat "$TMP/b.err"; fail "training stopped on a full metrics disk"; }
[ -f "$OUT/checkpoints/step-00000016/COMMITTED" ] || fail "no step 16 checkpoint after the metrics disk filled"
grep -q "^warning: $OUT/metrics.jsonl: cannot append a row (No space left on device)" "$TMP/b.err" ||
  { cat "$TMP/b.err"; fail "no clear warning about the metrics rows"; }
[ "$(grep -c 'cannot append a row' "$TMP/b.err")" = 1 ] || fail "the warning is repeated for every row"
rm -f "$OUT/filler"

# 2. moe eval --out past a file size limit (ulimit -f, as a quota would stop it; with SIGXFSZ
# ignored the write fails with EFBIG): exit 2 naming the file and the reason, earlier rows intact.
EVAL=$OUT/eval.jsonl
"$MOE" eval --checkpoint "$OUT/checkpoints/step-00000002" --data "$TMP/data" --out "$EVAL" > /dev/null
before=$(cat "$EVAL")
set +e
( trap '' XFSZ; ulimit -f $(( $(stat -c %s "$EVAL") / 1024 + 1 ))
  exec "$MOE" eval --checkpoint "$OUT/checkpoints" --data "$TMP/data" --out "$EVAL" ) > /dev/null 2> "$TMP/c.err"
rc=$?
set -e
[ $rc = 2 ] || { cat "$TMP/c.err"; fail "eval --out past its size limit exited $rc (expected 2)"; }
grep -q "^error: $EVAL: cannot append a row (File too large)" "$TMP/c.err" || { cat "$TMP/c.err"; fail "unclear eval error"; }
[ "$(head -c ${#before} "$EVAL")" = "$before" ] || fail "eval.jsonl's earlier rows changed"
[ "$(tail -c 1 "$EVAL" | od -An -c | tr -d ' ')" = '\n' ] || fail "eval.jsonl ends in a torn row"

# 3. A read-only run folder: the resumed run stops before training, naming the file and the reason.
mount -o remount,ro "$OUT"
set +e
"$MOE" train "${args[@]}" --set train.steps=18 > "$TMP/d.log" 2> "$TMP/d.err"
rc=$?
set -e
[ $rc = 2 ] || { cat "$TMP/d.err"; fail "a read-only run folder exited $rc (expected 2)"; }
grep -q "^error: $OUT/.*Read-only file system" "$TMP/d.err" || { cat "$TMP/d.err"; fail "the error does not say read-only"; }
mount -o remount,rw "$OUT"
"$MOE" inspect "$OUT/checkpoints/step-00000016" > /dev/null || fail "the checkpoint is damaged"
"$MOE" train "${args[@]}" --set train.steps=18 > "$TMP/e.log" || fail "no resume once writable again"
grep -q "resumed from $OUT/checkpoints/step-00000016 at step 16" "$TMP/e.log" || fail "did not resume from step 16"
echo "ok: full and read-only filesystems give clear errors and keep the run"
