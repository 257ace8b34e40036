"""Drives `moe serve`'s web page in headless Chromium through chromedriver's WebDriver HTTP API,
with the standard library only (driven by serve_browser.sh).
Usage: browser_drive.py SERVER_PORT CHROMEDRIVER_PORT SCREENSHOT.png
Reads the model's facts, shows an API error in the page, types a prompt, clicks Generate on a
request that only ends when stopped (text must appear while it runs: streaming, with no timing),
clicks Stop (the server must free the slot), generates again to the end (the text must equal the
API's greedy answer), and saves a screenshot. The server runs with --sliding-window
--max-tokens-limit 1000000."""
import base64
import json
import sys
import time
import urllib.request

SERVER, DRIVER, SHOT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
PAGE = f"http://127.0.0.1:{SERVER}/"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element key
PROMPT, MAX_TOKENS, ENDLESS = "ROMEO:", 400, 1000000


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)


def call(method, path, body=None, port=DRIVER):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        fail(f"WebDriver {method} {path}: {e.code} {e.read()[:500]!r}")


def wait_for(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    fail(f"timed out waiting for {what}")


caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
    "binary": "/usr/bin/chromium",
    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,860"]}}}}
session = call("POST", "/session", caps)["value"]["sessionId"]
S = f"/session/{session}"


def find(css):
    return call("POST", f"{S}/element", {"using": "css selector", "value": css})["value"][ELEMENT]


def text(css):
    return call("GET", f"{S}/element/{find(css)}/text")["value"]


def js(script, *args):
    return call("POST", f"{S}/execute/sync", {"script": script, "args": list(args)})["value"]


def type_into(css, value):
    el = find(css)
    call("POST", f"{S}/element/{el}/clear", {})
    call("POST", f"{S}/element/{el}/value", {"text": str(value)})


def click(css):
    call("POST", f"{S}/element/{find(css)}/click", {})


try:
    call("POST", f"{S}/url", {"url": PAGE})
    # The facts come from /info.
    params = wait_for("the model's facts", lambda: text("#fact-parameters") not in ("", "–") and text("#fact-parameters"))
    facts = {k: text("#fact-" + k) for k in ("parameters", "active-parameters", "step", "val-loss")}
    print("facts in the page:", facts)
    info = json.loads(urllib.request.urlopen(PAGE + "info").read())
    if facts["step"] != str(info["step"]) or facts["val-loss"] != f"{info['val_loss']:.4f}":
        fail(f"facts {facts} do not match /info {info}")
    if not facts["parameters"] or not facts["active-parameters"]:
        fail(f"missing parameter counts: {facts}")

    # An API error is shown in the page.
    type_into("#temperature", -1)
    click("#generate")
    err = wait_for("the error message", lambda: js("return document.getElementById('error').offsetParent !== null") and text("#error"))
    if "temperature" not in err:
        fail(f"the page shows {err!r} for temperature -1")

    type_into("#prompt", PROMPT)
    type_into("#temperature", 0)
    body = json.dumps({"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "top_k": 0, "top_p": 1, "seed": 0})
    req = urllib.request.Request(PAGE + "v1/completions", data=body.encode(), headers={"Content-Type": "application/json"})
    expected = json.loads(urllib.request.urlopen(req).read())["choices"][0]["text"]

    # Streaming, without timing: a generation that only ends when stopped shows text while it runs.
    type_into("#max_tokens", ENDLESS)
    click("#generate")
    seen = wait_for("text while generating", lambda: js(
        "const n = document.getElementById('out-text').textContent.length;"
        "return document.getElementById('status').textContent.startsWith('generating') && n >= 50 ? n : 0"))
    click("#stop")
    wait_for("the stop", lambda: text("#status") == "stopped")
    partial = js("return document.getElementById('out-text').textContent")
    n = min(len(partial), len(expected))
    if len(partial) < seen or partial[:n] != expected[:n]:
        fail(f"the stopped output {partial[:60]!r}... is not the greedy text {expected[:60]!r}...")
    print(f"streamed: {seen} chars shown while generating, {len(partial)} when stopped")
    # Stop closed the connection: the server frees the slot.
    wait_for("the stopped request's slot to be freed",
             lambda: json.loads(urllib.request.urlopen(PAGE + "health").read())["active"] == 0, timeout=15)

    # A whole generation ends equal to the API's answer.
    type_into("#max_tokens", MAX_TOKENS)
    click("#generate")
    wait_for("the end of the generation", lambda: text("#status").startswith("done"), timeout=60)
    if js("return document.getElementById('error').offsetParent !== null"):
        fail(f"the page shows an error: {text('#error')}")
    shown = js("return document.getElementById('out-text').textContent")
    if shown != expected:
        fail(f"the page shows {shown[:80]!r}... ({len(shown)} chars), the API gives {expected[:80]!r}... ({len(expected)})")
    print(f"generated {len(shown)} chars; status: {text('#status')}")
    png = base64.b64decode(call("GET", f"{S}/screenshot")["value"])
    with open(SHOT, "wb") as f:
        f.write(png)
    print("screenshot:", SHOT, len(png), "bytes")
finally:
    call("DELETE", S)
print("browser_drive.py: all checks passed")
