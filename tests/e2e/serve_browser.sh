#!/usr/bin/env bash
# `moe serve`'s web page in a real browser: headless Chromium (Debian's chromium and
# chromium-driver, driven over WebDriver by browser_drive.py) types a prompt, clicks Generate,
# sees the text stream in, clicks Stop, generates again, checks the text against the API and
# saves a screenshot to <build>/tests/serve_browser/screenshot.png. Skips (exit 77) only where Chromium is not installed.
# Usage: serve_browser.sh <moe binary> <source dir>
CHROMIUM=$(command -v chromium || true); DRIVER=$(command -v chromedriver || true)
if [ -z "$CHROMIUM" ] || [ -z "$DRIVER" ] || [ "$CHROMIUM" != /usr/bin/chromium ]; then
  echo "SKIP: needs /usr/bin/chromium and chromedriver (Debian: apt-get install chromium chromium-driver; make deps)"
  exit 77
fi
source "$(dirname "$0")/../tiny_data.sh" "$@"
OUT=$(cd "$(dirname "$MOE")" && pwd)/tests/serve_browser
mkdir -p "$OUT"; rm -f "$OUT/screenshot.png"
fail() { echo "FAIL: $*" >&2; for f in server.err driver.log; do [ -f "$TMP/$f" ] && sed "s/^/$f: /" "$TMP/$f" | tail -20 >&2; done; exit 1; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null; done; rm -rf "$TMP"; }
trap cleanup EXIT

"$MOE" train --config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set run.out_dir="$TMP/run" > /dev/null
"$MOE" serve --checkpoint "$TMP/run/checkpoints/latest" --port 0 --sliding-window --max-tokens-limit 1000000 \
  > "$TMP/server.out" 2> "$TMP/server.err" &
PIDS+=($!)
# chromedriver on a free port the kernel picks (asked for through a bound socket, then released).
DPORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$DRIVER" --port="$DPORT" > "$TMP/driver.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  grep -q "listening on http://" "$TMP/server.out" && curl -s "http://127.0.0.1:$DPORT/status" > /dev/null && break
  sleep 0.1
done
PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*/' "$TMP/server.out" | grep -o '[0-9]*/$' | tr -d /)
[ -n "$PORT" ] || fail "the server did not start"
/usr/bin/python3 "$SRC/tests/e2e/browser_drive.py" "$PORT" "$DPORT" "$OUT/screenshot.png" || fail "browser checks (above)"
[ -s "$OUT/screenshot.png" ] || fail "no screenshot"
echo "serve_browser: ok ($OUT/screenshot.png)"
