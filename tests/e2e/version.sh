#!/usr/bin/env bash
# `moe --version`: one line "moe X.Y.Z" with project()'s version in CMakeLists.txt, then the git
# commit the build was configured at when it was a checkout; exit 0.
set -euo pipefail
MOE=$1; SRC=$2
out=$("$MOE" --version)
want=$(sed -nE 's/^project\(moe VERSION ([0-9.]+) .*/\1/p' "$SRC/CMakeLists.txt")
[ -n "$want" ] || { echo "FAIL: no project(moe VERSION ...) in $SRC/CMakeLists.txt"; exit 1; }
[ "$(wc -l <<< "$out")" -eq 1 ] || { echo "FAIL: more than one line:"; echo "$out"; exit 1; }
[[ $out =~ ^moe\ ${want//./\\.}(\ \(git\ [0-9a-f]{7,40}\))?$ ]] || { echo "FAIL: '$out' (expected 'moe $want [(git COMMIT)]')"; exit 1; }
"$MOE" --help | grep -q -- "--version" || { echo "FAIL: moe --help does not mention --version"; exit 1; }
echo "ok: $out"
