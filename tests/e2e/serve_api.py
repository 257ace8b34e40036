"""The HTTP API of a running `moe serve` (driven by serve_api.sh), with the standard library only.
Usage: serve_api.py PORT EXPECTED.jsonl
EXPECTED.jsonl: `moe generate --prompts` output for the prompts below (same order), which every
completion must reproduce. The server runs with --max-batch 4 --max-queue 2 --max-body-bytes 4096
--sliding-window --max-tokens-limit 10000000, so max_tokens 10000000 makes a request that only ends
when its client goes away."""
import http.client
import json
import socket
import sys
import threading
import time

PORT = int(sys.argv[1])
EXPECTED = [json.loads(line) for line in open(sys.argv[2])]
GREEDY = {"max_tokens": 20, "temperature": 0}
SAMPLED = {"max_tokens": 20, "temperature": 0.9, "top_k": 20, "top_p": 0.95, "seed": 7}
ENDLESS = {"prompt": "KING:", "max_tokens": 10000000, "temperature": 0}


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)


def request(method, path, body=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    ctype = r.getheader("Content-Type", "")
    return r.status, (json.loads(payload) if ctype.startswith("application/json") else payload.decode())


def complete(prompt, params):
    status, body = request("POST", "/v1/completions", dict(prompt=prompt, **params))
    if status != 200:
        fail(f"completion of {prompt!r}: {status} {body}")
    return body


def health():
    return request("GET", "/health")[1]


def wait_idle(what, completed_at_least=0):
    deadline = time.time() + 15
    while time.time() < deadline:
        h = health()
        if h["active"] == 0 and h["queued"] == 0 and h["completed"] >= completed_at_least:
            return h
        time.sleep(0.05)
    fail(f"{what}: the server did not free the slots: {health()}")


class Stream:
    """A streaming completion read event by event over a raw socket (so it can hang up mid-stream)."""

    def __init__(self, body):
        self.sock = socket.create_connection(("127.0.0.1", PORT), timeout=30)
        data = json.dumps(body).encode()
        self.sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(data) + data)
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or b"text/event-stream" not in head:
            fail(f"stream: unexpected response head {head!r}")

    def _until(self, sep):
        while sep not in self.buf:
            more = self.sock.recv(65536)
            if not more:
                fail(f"stream: connection closed while waiting for {sep!r}")
            self.buf += more
        out, self.buf = self.buf.split(sep, 1)
        return out

    def event(self):
        """The next server-sent event's data (chunked transfer decoded), or None at the end."""
        size = int(self._until(b"\r\n"), 16)
        if size == 0:
            return None
        while len(self.buf) < size + 2:
            self.buf += self.sock.recv(65536)
        chunk, self.buf = self.buf[:size], self.buf[size + 2:]
        text = chunk.decode()
        if not text.startswith("data: ") or not text.endswith("\n\n"):
            fail(f"stream: malformed event {text!r}")
        return text[6:-2]

    def hang_up(self):
        self.sock.close()


def check_facts():
    status, info = request("GET", "/info")
    if status != 200:
        fail(f"/info: {status}")
    for key in ("parameters", "active_parameters", "step", "val_loss", "precision", "context", "kv_cache"):
        if key not in info:
            fail(f"/info lacks {key}: {info}")
    if not 0 < info["active_parameters"] < info["parameters"]:
        fail(f"/info: active parameters {info['active_parameters']} of {info['parameters']}")
    if info["step"] != 20 or not isinstance(info["val_loss"], float):
        fail(f"/info: step {info['step']}, val_loss {info['val_loss']} (expected 20 and the run's eval)")
    kv = info["kv_cache"]
    if not 0 < kv["bytes_per_token"] < kv["full_kv_bytes_per_token"]:
        fail(f"/info: latent cache {kv} should be smaller than full K/V")
    status, page = request("GET", "/")
    if status != 200 or "<textarea" not in page or "/v1/completions" not in page:
        fail("GET / is not the web page")
    if request("GET", "/v1/models")[1]["data"][0]["id"] != info["model"]:
        fail("/v1/models does not name the model")
    h = health()
    if h["status"] != "ok" or h["active"] != 0:
        fail(f"/health: {h}")


def check_completions():
    for i, exp in enumerate(EXPECTED):
        params = GREEDY if i < 4 else SAMPLED
        got = complete(exp["prompt"], params)
        choice = got["choices"][0]
        if choice["text"] != exp["text"]:
            fail(f"prompt {exp['prompt']!r} {params}: server {choice['text']!r} != moe generate {exp['text']!r}")
        if choice["finish_reason"] not in ("length", "stop") or got["object"] != "text_completion":
            fail(f"bad completion body {got}")
        u = got["usage"]
        if u["prompt_tokens"] != exp["prompt_tokens"] or u["total_tokens"] != u["prompt_tokens"] + u["completion_tokens"]:
            fail(f"usage {u} vs {exp}")
    # A stop string ends the text before it.
    full = EXPECTED[0]["text"]
    if len(full) > 4:
        cut = full[2:4]
        got = complete(EXPECTED[0]["prompt"], dict(GREEDY, stop=[cut]))["choices"][0]
        if got["text"] != full[:full.index(cut)] or got["finish_reason"] != "stop":
            fail(f"stop {cut!r}: {got} (full text {full!r})")


def check_stream():
    exp = EXPECTED[0]
    s = Stream(dict(prompt=exp["prompt"], stream=True, **GREEDY))
    texts, finish, events = [], None, []
    while (data := s.event()) is not None:
        events.append(data)
    s.hang_up()
    if events[-1] != "[DONE]":
        fail(f"stream does not end with [DONE]: {events[-3:]}")
    for data in events[:-1]:
        chunk = json.loads(data)
        texts.append(chunk["choices"][0]["text"])
        finish = chunk["choices"][0]["finish_reason"]
    if "".join(texts) != exp["text"] or finish not in ("length", "stop"):
        fail(f"streamed {''.join(texts)!r} ({finish}) != {exp['text']!r}")
    if sum(1 for t in texts if t) < 2:
        fail(f"the text came in one piece, not streamed: {texts}")


def check_errors():
    big = json.dumps({"prompt": "a" * 5000})
    cases = [
        ("POST", "/v1/completions", "{not json", 400, None),
        ("POST", "/v1/completions", "[1,2,3]", 400, None),
        ("POST", "/v1/completions", '{"max_tokens": 5}', 400, "prompt"),
        ("POST", "/v1/completions", '{"prompt": 12}', 400, "prompt"),
        ("POST", "/v1/completions", '{"prompt": "a", "max_tokens": "ten"}', 400, "max_tokens"),
        ("POST", "/v1/completions", '{"prompt": "a", "max_tokens": 10000001}', 400, "max_tokens"),
        ("POST", "/v1/completions", '{"prompt": "a", "temperature": -1}', 400, "temperature"),
        ("POST", "/v1/completions", '{"prompt": "a", "top_p": 0}', 400, "top_p"),
        ("POST", "/v1/completions", '{"prompt": "a", "top_p": 1.01}', 400, "top_p"),
        ("POST", "/v1/completions", '{"prompt": "a", "temperature": NaN}', 400, None),
        ("POST", "/v1/completions", '{"prompt": "a", "frobnicate": 1}', 400, "frobnicate"),
        ("POST", "/v1/completions", '{"prompt": "' + "x" * 3000 + '"}', 400, "prompt"),  # over the context
        ("POST", "/v1/completions", "[" * 1000, 400, None),  # nested too deep
        ("POST", "/v1/completions", big, 413, None),
        ("GET", "/v1/completions", None, 405, None),
        ("POST", "/health", "{}", 405, None),
        ("GET", "/nope", None, 404, None),
    ]
    for method, path, raw, status, param in cases:
        got, body = request(method, path, raw=raw)
        if got != status or "error" not in body or "message" not in body["error"]:
            fail(f"{method} {path} {str(raw)[:60]!r}: {got} {body} (expected {status} with an error body)")
        if param and body["error"]["param"] != param:
            fail(f"{method} {path} {raw[:60]!r}: param {body['error']['param']!r}, expected {param!r}")
    # Not HTTP at all: a 400 or a closed connection, and the server lives on.
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        s.recv(1000)
    check_facts()


def check_concurrency():
    """Requests of several clients are decoded together: with an endless stream in a slot, four
    clients' requests are each answered correctly, and /health saw several sequences in one step."""
    endless = Stream(dict(ENDLESS, stream=True))
    endless.event()  # it is decoding now
    results = [None] * 4

    def client(i):
        results[i] = complete(EXPECTED[i]["prompt"], GREEDY)["choices"][0]["text"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        if results[i] != EXPECTED[i]["text"]:
            fail(f"concurrent client {i}: {results[i]!r} != {EXPECTED[i]['text']!r}")
    h = health()
    if h["max_batch_seen"] < 2 or h["active"] != 1:
        fail(f"/health after concurrent clients: {h} (expected max_batch_seen >= 2 and the endless stream active)")

    # Queue full: 4 slots + 2 queued; the endless stream and 5 more fill them, the next gets 429.
    more = [Stream(dict(ENDLESS, stream=True)) for _ in range(5)]
    status, body = request("POST", "/v1/completions", GREEDY | {"prompt": "a"})
    if status != 429 or "busy" not in body["error"]["message"]:
        fail(f"with 6 requests outstanding: {status} {body} (expected 429)")
    deadline = time.time() + 10
    while (h := health())["active"] != 4 or h["queued"] != 2:
        if time.time() > deadline:
            fail(f"/health with the slots full: {h} (expected 4 active, 2 queued)")
        time.sleep(0.02)
    # Clients that hang up mid-stream free their slots (a write to them fails).
    completed = h["completed"]
    for s in [endless] + more:
        s.hang_up()
    wait_idle("streams hung up", completed + 6)


def check_hangup_without_stream():
    """A non-streaming client that goes away while its request decodes frees its slot too."""
    completed = health()["completed"]
    sock = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    data = json.dumps(ENDLESS).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    deadline = time.time() + 10
    while health()["active"] == 0:
        if time.time() > deadline:
            fail("the endless request never became active")
        time.sleep(0.02)
    sock.close()
    wait_idle("non-streaming client hung up", completed + 1)
    # And the server still answers correctly.
    if complete(EXPECTED[0]["prompt"], GREEDY)["choices"][0]["text"] != EXPECTED[0]["text"]:
        fail("wrong answer after the hang-ups")


check_facts()
check_completions()
check_stream()
check_errors()
check_concurrency()
check_hangup_without_stream()
print("serve_api.py: all checks passed")
