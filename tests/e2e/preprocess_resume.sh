#!/usr/bin/env bash
# moe preprocess killed with SIGKILL at random moments and started again with the same arguments:
# the final output is byte-identical to an uninterrupted run, and between kills the .tmp folder
# never holds a file that looks complete but is not (check_tmp_folder).
# usage: bash tests/e2e/preprocess_resume.sh <path-to-moe> <source-dir>
set -euo pipefail
MOE=$1
SRC=$2
tmp=$(mktemp -d)
pid=
mounted=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; [ -n "$mounted" ] && umount "$tmp/small"; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# ~6 MB: Tiny Shakespeare five times (one of them gzipped), plus .jsonl lines.
mkdir -p "$tmp/in"
for i in 1 2 3 4; do cat "$SRC/data/tinyshakespeare.txt" >"$tmp/in/part$i.txt"; done
gzip -c "$SRC/data/tinyshakespeare.txt" >"$tmp/in/part5.txt.gz"
awk '{ gsub(/["\\]/, ""); printf "{\"text\": \"%s\"}\n", $0 }' "$SRC/data/tinyshakespeare.txt" >"$tmp/in/lines.jsonl"
S=131072
args=(preprocess --input "$tmp/in" --tokenizer byte --split-docs --shard-tokens $S --val-fraction 0.05 --progress-every 0)

"$MOE" "${args[@]}" --output "$tmp/ref" --workers 2 >/dev/null

# What a kill may leave in OUT.tmp: files with their final names are complete and known to
# progress.json. Partial files end in .tmp. A stream shard (train/shard-K.bin) is in progress.json
# with its sha256 before it gets its name; once the val split is recorded, the last train shard may
# be cut to length (then its bytes are the reference stream's, from shard K on). Val shards,
# indexes and manifests equal the reference's.
ref_stream() { cat "$tmp/ref/train"/shard-*.bin "$tmp/ref/val"/shard-*.bin; }
check_tmp_folder() {
  local dir=$1 f k size want
  [ -d "$dir/train" ] || return 0
  [ -f "$dir/progress.json" ] || fail "$dir/train exists without progress.json"
  local -a shas
  read -r -a shas <<<"$(grep -o '"shard_sha256":\[[^]]*\]' "$dir/progress.json" | grep -o '"[0-9a-f]*"' | tr -d '"' | tr '\n' ' ')"
  for f in "$dir/train"/shard-*.bin; do
    [ -e "$f" ] || continue
    k=$((10#$(basename "$f" .bin | sed 's/shard-//')))
    [ "$k" -lt "${#shas[@]}" ] || fail "$f has its final name but progress.json records only ${#shas[@]} shards"
    [ "$(sha256sum "$f" | cut -d' ' -f1)" = "${shas[$k]}" ] && continue
    grep -q '"val":null' "$dir/progress.json" && fail "$f: sha256 differs from progress.json's record"
    size=$(stat -c %s "$f")
    cmp -s -n "$size" -i "$((k * 2 * S)):0" <(ref_stream) "$f" ||
      fail "$f: $size bytes, not the reference stream's (after the val split was recorded)"
  done
  for f in "$dir"/val/shard-*.bin "$dir"/*/shard-*.idx "$dir"/*/manifest.json; do
    [ -e "$f" ] || continue
    want="$tmp/ref/${f#"$dir"/}"
    cmp -s "$want" "$f" || fail "$f differs from the reference's"
  done
}

# Kill at random moments, 8 times; a run that gets to the end first is checked and started again
# from scratch. Then let the last one finish.
RANDOM=$$
kills=0
for attempt in $(seq 1 30); do
  [ "$kills" -lt 8 ] || break
  "$MOE" "${args[@]}" --output "$tmp/out" --workers $((1 + attempt % 2)) >"$tmp/summary" 2>"$tmp/stderr" &
  pid=$!
  sleep "0.$(printf "%03d" $((RANDOM % 240 + 10)))"
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    pid=
    kills=$((kills + 1))
    if [ -d "$tmp/out" ]; then  # it had renamed its folder into place: the same command completes it
      if [ -e "$tmp/out/progress.json" ]; then
        "$MOE" "${args[@]}" --output "$tmp/out" >"$tmp/summary" 2>"$tmp/stderr" || fail "completing run: $(cat "$tmp/stderr")"
        grep -q "was complete but for removing its progress.json" "$tmp/stderr" "$tmp/summary" ||
          fail "the completing run did not recognise the finished output"
      fi
      diff -r "$tmp/ref" "$tmp/out" >/dev/null || fail "output after $kills kills differs from an uninterrupted run"
      rm -rf "$tmp/out"
      continue
    fi
    check_tmp_folder "$tmp/out.tmp"
  else
    wait "$pid" || fail "run $attempt failed: $(cat "$tmp/stderr")"
    pid=
    diff -r "$tmp/ref" "$tmp/out" >/dev/null || fail "output after $kills kills differs from an uninterrupted run"
    rm -rf "$tmp/out"
  fi
done
[ -d "$tmp/out" ] || { "$MOE" "${args[@]}" --output "$tmp/out" >"$tmp/summary" 2>"$tmp/stderr" || fail "last run: $(cat "$tmp/stderr")"; }
[ "$kills" -ge 8 ] || fail "only $kills kills landed; the test did not test much"
diff -r "$tmp/ref" "$tmp/out" >/dev/null || fail "output after $kills kills differs from an uninterrupted run"
[ ! -e "$tmp/out.tmp" ] || fail "out.tmp left behind"
"$MOE" inspect "$tmp/out" >/dev/null || fail "inspect after resume"

# A full disk (a 4 MB tmpfs, where mounting is allowed): one clear error naming the file, the
# finished shards kept; with room made, the same command finishes the job.
mkdir "$tmp/small"
if mount -t tmpfs -o size=4m tmpfs "$tmp/small" 2>/dev/null; then
  mounted=1
  rc=0
  "$MOE" "${args[@]}" --output "$tmp/small/out" >/dev/null 2>"$tmp/stderr" || rc=$?
  [ "$rc" = 2 ] || fail "full disk: exit $rc, expected 2"
  grep -Eq '^error: .*small/out\.tmp/.*: write failed \(No space left on device\) \(the finished part is kept in' "$tmp/stderr" ||
    fail "full disk: $(cat "$tmp/stderr")"
  mount -o remount,size=64m "$tmp/small"
  "$MOE" "${args[@]}" --output "$tmp/small/out" >/dev/null 2>"$tmp/stderr" || fail "after making room: $(cat "$tmp/stderr")"
  grep -q "resuming" "$tmp/stderr" || fail "did not resume after the full disk: $(cat "$tmp/stderr")"
  diff -r "$tmp/ref" "$tmp/small/out" >/dev/null || fail "output after a full disk differs"
else
  echo "preprocess_resume e2e: no tmpfs mount here, full-disk case skipped" >&2
fi
echo "preprocess_resume e2e: ok ($kills kills)"
