#!/usr/bin/env bash
# Bad checkpoints and failing saves, with real files:
#  - a flipped byte in, or a truncation of, the newest committed checkpoint: resume says so, skips
#    it and continues from the previous one;
#  - an unwritable checkpoints folder (chattr +i), a checkpoints "folder" that is a file, and a full
#    disk (a 1-checkpoint tmpfs): a clear error, exit 2 at the next step boundary, the previous
#    checkpoint intact and nothing half-written left behind.
# chattr and mount need root and a filesystem that allows them; each case is skipped with a note
# where they do not work. Usage: checkpoint_faults.sh <moe binary> <source dir>
set -euo pipefail
MOE=$1; SRC=$2
TMP=$(mktemp -d)
IMMUTABLE=""; MOUNTED=""
cleanup() {
  [ -n "$IMMUTABLE" ] && chattr -i "$IMMUTABLE" 2>/dev/null
  [ -n "$MOUNTED" ] && umount "$MOUNTED" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export MOE_NUM_THREADS=1
head -c 60000 "$SRC/data/tinyshakespeare.txt" > "$TMP/corpus.txt"
"$MOE" preprocess --input "$TMP/corpus.txt" --tokenizer byte --output "$TMP/data" > /dev/null
args=(--config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set train.eval_every=0
      --set checkpoint.every=2 --set checkpoint.keep_last=0 --set train.log_every=1)
OUT=$TMP/run; CK=$OUT/checkpoints

"$MOE" train "${args[@]}" --set run.out_dir="$OUT" --set train.steps=6 > "$TMP/a.log"
[ -f "$CK/step-00000006/COMMITTED" ] || fail "no step 6 checkpoint"

# A flipped byte in the middle of the newest state.h5: the checksum catches it.
f=$CK/step-00000006/state.h5
pos=$(( $(stat -c %s "$f") / 2 ))
byte=$(od -An -tu1 -j "$pos" -N1 "$f" | tr -d ' ')
printf "$(printf '\\%03o' $(( byte ^ 1 )))" | dd of="$f" bs=1 seek="$pos" conv=notrunc status=none
"$MOE" train "${args[@]}" --set run.out_dir="$OUT" --set train.steps=8 > "$TMP/b.log" 2> "$TMP/b.err"
grep -q "warning: skipping checkpoint $CK/step-00000006: .*checksum mismatch" "$TMP/b.err" || { cat "$TMP/b.err"; fail "corrupt checkpoint not reported"; }
grep -q "resumed from $CK/step-00000004 at step 4" "$TMP/b.log" || fail "did not fall back to step 4"
"$MOE" inspect "$CK/step-00000006" > /dev/null || fail "step 6 was not re-saved by the resumed run"

# A truncated state.h5 (a copy cut short, a disk that lost the tail).
truncate -s 3000 "$CK/step-00000008/state.h5"
"$MOE" train "${args[@]}" --set run.out_dir="$OUT" --set train.steps=10 > "$TMP/c.log" 2> "$TMP/c.err"
grep -q "warning: skipping checkpoint $CK/step-00000008" "$TMP/c.err" || { cat "$TMP/c.err"; fail "truncated checkpoint not reported"; }
grep -q "resumed from $CK/step-00000006 at step 6" "$TMP/c.log" || fail "did not fall back to step 6"
echo "ok: corrupt and truncated checkpoints are skipped"

# Saves that fail must stop training with exit 2 and leave the newest good checkpoint alone.
expect_save_failure() {  # <log> <expected message part> <last good step>
  local log=$1 want=$2 good=$3
  grep -q "error: checkpoint of step .* failed: .*$want" "$log" || { cat "$log"; fail "no clear save error ($want)"; }
  grep -q "earlier checkpoints are untouched" "$log" || fail "error does not say the earlier checkpoints are kept"
  "$MOE" inspect "$CK/latest" --json | grep -q "\"step\":$good" || fail "latest is not step $good any more"
  ! ls "$CK" | grep -q '\.tmp$' || fail "a half-written .tmp was left behind: $(ls "$CK")"
}

if chattr +i "$CK" 2>/dev/null && ! touch "$CK/probe" 2>/dev/null; then
  IMMUTABLE=$CK
  set +e
  "$MOE" train "${args[@]}" --set run.out_dir="$OUT" --set train.steps=16 > "$TMP/d.log" 2>&1
  rc=$?
  set -e
  chattr -i "$CK"; IMMUTABLE=""
  [ $rc -eq 2 ] || { cat "$TMP/d.log"; fail "unwritable folder: exit $rc, expected 2"; }
  expect_save_failure "$TMP/d.log" "Operation not permitted" 10
  # The save of step 12 ran in the background; its failure stops training at the first step
  # boundary after it is known (13, or 14 where the next save waits for it).
  grep -q "^step     13/16" "$TMP/d.log" || fail "training did not go on while the save was written"
  ! grep -q "^step     15/16" "$TMP/d.log" || fail "training went on after the failed save"
  echo "ok: unwritable checkpoints folder"
else
  rm -f "$CK/probe"
  echo "skip: chattr +i does not make folders read-only here"
fi

# The checkpoints path is a file: refused at start, before any training.
mkdir -p "$TMP/filerun"; echo x > "$TMP/filerun/checkpoints"
set +e
"$MOE" train "${args[@]}" --set run.out_dir="$TMP/filerun" --set train.steps=2 > "$TMP/e.log" 2>&1
rc=$?
set -e
[ $rc -eq 2 ] || fail "checkpoints path is a file: exit $rc, expected 2"
grep -q "error: $TMP/filerun/checkpoints: not a folder" "$TMP/e.log" || { cat "$TMP/e.log"; fail "unclear error"; }
echo "ok: checkpoints path that is a file"

# Disk full, on a small tmpfs: first so full that the save is refused before writing (its tensors
# alone do not fit), then with room for the tensors but not the whole file, so a write fails
# halfway through state.h5.
FULL=$TMP/full; CK=$FULL/checkpoints
mkdir -p "$CK"
ONE=$(du -sb "$TMP/run/checkpoints/step-00000002" | cut -f1)
if mount -t tmpfs -o size=$(( (ONE * 4 / 4096 + 1) * 4096 )) tmpfs "$CK" 2>/dev/null; then
  MOUNTED=$CK
  "$MOE" train "${args[@]}" --set run.out_dir="$FULL" --set train.steps=2 > "$TMP/f.log" 2>&1 || fail "first save on tmpfs"
  avail() { df -B1 --output=avail "$CK" | tail -1 | tr -d ' '; }
  leave_free() {  # fills the tmpfs (with a file the trainer ignores) until $1 bytes are free
    rm -f "$CK/filler"
    head -c $(( $(avail) - $1 )) /dev/zero > "$CK/filler"
  }
  train_expecting_failure() {
    set +e
    "$MOE" train "${args[@]}" --set run.out_dir="$FULL" --set train.steps=4 > "$TMP/f.log" 2>&1
    rc=$?
    set -e
    [ $rc -eq 2 ] || { cat "$TMP/f.log"; fail "disk full: exit $rc, expected 2"; }
    expect_save_failure "$TMP/f.log" "No space left on device" 2
  }
  leave_free $(( ONE / 2 ))
  train_expecting_failure
  need=$(sed -n 's/.*needs more than \([0-9]*\) bytes.*/\1/p' "$TMP/f.log")
  [ -n "$need" ] || { cat "$TMP/f.log"; fail "the refused save does not say how much it needs"; }
  size=$(stat -c %s "$CK/step-00000002/state.h5")
  leave_free $(( (need + size) / 2 / 4096 * 4096 + 4096 ))
  train_expecting_failure
  grep -q "state.h5: cannot write dataset .*No space left on device" "$TMP/f.log" || { cat "$TMP/f.log"; fail "no write failure"; }
  "$MOE" inspect "$CK/step-00000002" > /dev/null || fail "step 2 damaged"
  umount "$CK"; MOUNTED=""
  echo "ok: disk full (refused before writing, and failing halfway)"
else
  echo "skip: cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)"
fi
echo ok
