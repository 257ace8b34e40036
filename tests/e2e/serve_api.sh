#!/usr/bin/env bash
# `moe serve` over real HTTP on a tiny checkpoint (docs/serving.md): completions equal to
# `moe generate`, streaming, concurrent clients batched together, bad requests, full queue,
# clients hanging up, a port in use, and a clean shutdown on SIGTERM.
# Usage: serve_api.sh <moe binary> <source dir>
source "$(dirname "$0")/../tiny_data.sh" "$@"
fail() { echo "FAIL: $*" >&2; [ -f "$TMP/server.err" ] && sed 's/^/server: /' "$TMP/server.err" >&2; exit 1; }
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2> /dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

"$MOE" train --config "$SRC/configs/tiny.yaml" --set data.path="$TMP/data" --set run.out_dir="$TMP/run" > /dev/null
CKPT=$TMP/run/checkpoints/latest

# What the server must reproduce: four greedy prompts and one sampled, from `moe generate`.
cat > "$TMP/prompts.jsonl" << 'EOF'
{"prompt": "ROMEO:", "max_tokens": 20, "temperature": 0}
{"prompt": "First:\n", "max_tokens": 20, "temperature": 0}
{"prompt": "The king", "max_tokens": 20, "temperature": 0}
{"prompt": "", "max_tokens": 20, "temperature": 0}
{"prompt": "To be", "max_tokens": 20, "temperature": 0.9, "top_k": 20, "top_p": 0.95, "seed": 7}
EOF
"$MOE" generate --checkpoint "$CKPT" --prompts "$TMP/prompts.jsonl" > "$TMP/expected.jsonl"

# --port 0: the kernel picks a free port, which the startup line names.
"$MOE" serve --checkpoint "$CKPT" --port 0 --max-batch 4 --max-queue 2 --max-body-bytes 4096 \
  --sliding-window --max-tokens-limit 10000000 > "$TMP/server.out" 2> "$TMP/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do
  grep -q "listening on http://" "$TMP/server.out" && break
  kill -0 "$SERVER_PID" 2> /dev/null || fail "the server exited at start"
  sleep 0.1
done
PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*/' "$TMP/server.out" | grep -o '[0-9]*/$' | tr -d /)
[ -n "$PORT" ] || fail "no startup line with the URL: $(cat "$TMP/server.out")"

/usr/bin/python3 "$SRC/tests/e2e/serve_api.py" "$PORT" "$TMP/expected.jsonl" || fail "API checks (above)"
# The log shows the batching: a request of the concurrent clients was decoded beside others.
grep -Eq "decoded in batches of up to [2-9]" "$TMP/server.err" || fail "no request was decoded in a batch of 2 or more"
# Every client that hung up (six streams, one plain request) had its request cancelled.
[ "$(grep -c "completion tokens, cancelled" "$TMP/server.err")" = 7 ] || fail "expected 7 cancelled requests"

# A second server on the same port: one clear line, exit 2, and the first one unharmed.
set +e
"$MOE" serve --checkpoint "$CKPT" --port "$PORT" > /dev/null 2> "$TMP/second.err"
rc=$?
set -e
[ "$rc" = 2 ] || fail "a port in use should exit 2, got $rc"
grep -q "^error: port $PORT is in use" "$TMP/second.err" || fail "unclear port-in-use message: $(cat "$TMP/second.err")"
[ "$(wc -l < "$TMP/second.err")" = 1 ] || fail "the port-in-use error should be one line: $(cat "$TMP/second.err")"
kill -0 "$SERVER_PID" || fail "the first server died"

# SIGTERM: a clean exit (status 0) within seconds.
kill -TERM "$SERVER_PID"
for _ in $(seq 50); do kill -0 "$SERVER_PID" 2> /dev/null || break; sleep 0.1; done
kill -0 "$SERVER_PID" 2> /dev/null && fail "the server did not stop on SIGTERM"
wait "$SERVER_PID" || fail "the server exited with status $? on SIGTERM"
SERVER_PID=
grep -q "shutting down" "$TMP/server.err" || fail "no shutdown line"
echo "serve_api: ok"
