"""Browser tests of the built-in web UI: the chat page (`/`) and the dashboard (`/dashboard`),
driven in headless Chromium (Debian's `chromium` + `chromium-driver`) by PyPI `selenium`.

Starts the release binary on free loopback ports with the real models (Qwen for chat, Gemma for
the API key, dashboard and --no-webui servers) and checks: a prompt streams into the page and
the page's text is the server's own greedy answer; Stop ends the request on the server (through
/metrics); regenerate, edit-and-resend, conversations (new / rename / delete / kept across a
reload); model output carrying `<img onerror>` / `<script>` / `javascript:` links stays text and
runs nothing; the API key prompt (sessionStorage only); the plain-completion view; the
dashboard's numbers move under load; `--no-webui` 404s. Saves screenshots (desktop 1366x900
and phone 390x844) under target/webui-screenshots and prints the chat page's first paint
(reported, not asserted) and the size of the embedded assets. Run by scripts/test.sh:

    python3 tests/webui.py [path/to/switchyard]
"""

import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from openai_client import GEMMA, QWEN, ROOT, Server  # noqa: E402

SHOTS = os.path.join(ROOT, "target", "webui-screenshots")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
DESKTOP = (1366, 900)
PHONE = (390, 844)
REPORT = {}


# --- helpers --------------------------------------------------------------------------------


def http_get(url, key=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def http_post(url, body, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def metric(base, name, key=None):
    """The sum of a metric's samples whose `name{labels}` starts with `name`."""
    st, _, text = http_get(base + "/metrics", key)
    assert st == 200, text
    vals = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    assert vals, f"metric {name} missing"
    return sum(vals)


def browser(size):
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-extensions", "--no-first-run", f"--window-size={size[0]},{size[1]}"]:
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
    viewport(d, size)
    return d


def viewport(d, size):
    """Exactly `size` CSS pixels (a phone as a mobile viewport)."""
    d.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": size[0] < 600},
    )


def wait(d, cond, timeout=60, what="condition"):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda _: cond())
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}") from None


def shot(d, name):
    os.makedirs(SHOTS, exist_ok=True)
    path = os.path.join(SHOTS, name + ".png")
    d.save_screenshot(path)
    print(f"screenshot: {os.path.relpath(path, ROOT)}")


def js(d, code, *args):
    return d.execute_script(code, *args)


def by_id(d, i):
    return d.find_element(By.ID, i)


def answers(d):
    return d.find_elements(By.CSS_SELECTOR, "#messages article.assistant, #messages article.completion")


def pending(d):
    return bool(d.find_elements(By.CSS_SELECTOR, "#messages article.pending"))


def stored(d):
    """The conversations as the page keeps them in localStorage."""
    return json.loads(js(d, "return localStorage.getItem('switchyard.conversations.v1') || '[]'"))


def current_messages(d):
    cur = js(d, "return document.querySelector('.conv.current .conv-title').textContent")
    return next(c for c in stored(d) if c["title"] == cur)["messages"]


def set_setting(d, field, value):
    if not by_id(d, field).is_displayed():
        by_id(d, "toggle-settings").click()
    e = by_id(d, field)
    e.clear()
    if value != "":
        e.send_keys(str(value))
    if by_id(d, "close-settings").is_displayed():
        by_id(d, "close-settings").click()


def send(d, text):
    box = by_id(d, "prompt")
    box.clear()
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def load(d, url):
    d.get(url)
    wait(d, lambda: js(d, "return document.body.classList.contains('ready')"), 60, "page ready")


def first_paint(d):
    e = js(d, "return performance.getEntriesByType('paint').map(p => [p.name, p.startTime])")
    return dict(e)


# --- tests ----------------------------------------------------------------------------------


def chat(s, d):
    base = s.base
    st, headers, _ = http_get(base + "/")
    assert st == 200 and "default-src 'none'" in headers["content-security-policy"], headers
    assert "script-src 'self'" in headers["content-security-policy"]
    load(d, base + "/")
    # First paint from a warm server: a second load (the first warmed caches and the server).
    load(d, base + "/")
    REPORT["first paint (chat, warm)"] = first_paint(d)
    options = [o.get_attribute("value") for o in by_id(d, "model").find_elements(By.TAG_NAME, "option")]
    assert options == [QWEN], options
    assert by_id(d, "mode").text == "chat", by_id(d, "mode").text
    shot(d, "chat-empty-desktop")

    # A prompt streams in: the answer grows over several paints, then finishes with stats.
    set_setting(d, "temperature", 0)
    set_setting(d, "max_tokens", 48)
    prompt = "Explain in three short bullet points why trains are efficient."
    send(d, prompt)
    seen = set()
    deadline = time.time() + 120
    while time.time() < deadline:
        # One read of the page (the answer's element is replaced when it finishes).
        n, busy = js(d, "const a = [...document.querySelectorAll('#messages article.assistant')].pop();"
                        "return a ? [a.querySelector('.content').textContent.length,"
                        " a.classList.contains('pending')] : [-1, true]")
        if n >= 0 and busy:
            seen.add(n)
        elif n >= 0:
            break
        time.sleep(0.03)
    assert not pending(d), "the answer did not finish"
    grew = sorted(x for x in seen if x > 1)
    assert len(grew) >= 3, f"text did not stream in (lengths seen while pending: {sorted(seen)})"
    stats = answers(d)[-1].find_element(By.CSS_SELECTOR, ".stats").text
    assert "tok/s" in stats and "TTFT" in stats and "finish: length" in stats, stats
    # The page assembled exactly the server's greedy answer.
    want = http_post(base + "/v1/chat/completions", {
        "model": QWEN, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 48,
    })["choices"][0]["message"]["content"]
    msgs = current_messages(d)
    assert [m["role"] for m in msgs] == ["user", "assistant"], msgs
    assert msgs[1]["content"] == want, (msgs[1]["content"], want)
    assert msgs[1]["stats"]["tokens"] == 48 and not msgs[1]["stats"]["approx"], msgs[1]["stats"]
    # Rendered as Markdown: the bullets became a list.
    assert answers(d)[-1].find_elements(By.CSS_SELECTOR, ".content li"), answers(d)[-1].get_attribute("innerHTML")
    shot(d, "chat-desktop")

    # Stop mid-answer: the request ends on the server.
    aborts = metric(base, 'switchyard:request_success_total{model_name="%s",finished_reason="abort"}' % QWEN)
    set_setting(d, "max_tokens", 1500)
    send(d, "Count from 1 to 500, one number per line.")
    wait(d, lambda: pending(d) and len(answers(d)[-1].text) > 20, 120, "a streaming answer")
    assert metric(base, "switchyard:num_requests_running") == 1
    by_id(d, "stop").click()
    wait(d, lambda: not pending(d), 10, "the page to stop")
    assert "stopped" in answers(d)[-1].find_element(By.CSS_SELECTOR, ".stats").text
    deadline = time.time() + 10
    while time.time() < deadline:
        if metric(base, "switchyard:num_requests_running") == 0:
            break
        time.sleep(0.1)
    assert metric(base, "switchyard:num_requests_running") == 0, "the stopped request still runs"
    after = metric(base, 'switchyard:request_success_total{model_name="%s",finished_reason="abort"}' % QWEN)
    assert after == aborts + 1, (aborts, after)
    gen = metric(base, "switchyard:generation_tokens_total")
    time.sleep(1.0)
    assert metric(base, "switchyard:generation_tokens_total") == gen, "tokens still generated after Stop"
    stopped = current_messages(d)[-1]
    assert stopped["stats"]["finish"] == "stopped" and 0 < len(stopped["content"]), stopped

    # Regenerate replaces the last answer.
    set_setting(d, "max_tokens", 12)
    answers(d)[-1].find_element(By.CSS_SELECTOR, "button.regenerate").click()
    wait(d, lambda: not pending(d) and by_id(d, "send").is_displayed(), 120, "the regenerated answer")
    msgs = current_messages(d)
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 2, msgs
    assert msgs[-1]["stats"]["finish"] == "length" and msgs[-1]["stats"]["tokens"] == 12, msgs[-1]

    # Edit-and-resend the first message: the conversation is cut there and answered again.
    d.find_elements(By.CSS_SELECTOR, "#messages article.user button.edit")[0].click()
    box = d.find_element(By.CSS_SELECTOR, "#messages textarea.edit-box")
    box.clear()
    box.send_keys("Say hello in French.")
    d.find_element(By.CSS_SELECTOR, "#messages button.resend").click()
    wait(d, lambda: len(answers(d)) == 1 and not pending(d), 120, "the edited answer")
    msgs = current_messages(d)
    assert [m["role"] for m in msgs] == ["user", "assistant"], msgs
    assert msgs[0]["content"] == "Say hello in French." and msgs[1]["content"], msgs
    want = http_post(base + "/v1/chat/completions", {
        "model": QWEN, "messages": [{"role": "user", "content": msgs[0]["content"]}], "temperature": 0,
        "max_tokens": 12,
    })["choices"][0]["message"]["content"]
    assert msgs[1]["content"] == want, (msgs[1]["content"], want)

    # Conversations: new, rename, delete, and they survive a reload.
    by_id(d, "new-chat").click()
    send(d, "Name one color.")
    wait(d, lambda: answers(d) and not pending(d), 120, "the second conversation's answer")
    titles = lambda: js(d, "return [...document.querySelectorAll('.conv-title')].map(e => e.textContent)")  # noqa: E731
    assert len(titles()) == 2, titles()
    d.find_element(By.CSS_SELECTOR, ".conv.current button.rename").click()
    ren = d.find_element(By.CSS_SELECTOR, ".rename-input")
    ren.send_keys(Keys.CONTROL, "a")  # the old name is selected; replaced by typing
    ren.send_keys("Colors", Keys.ENTER)
    assert "Colors" in titles(), titles()
    load(d, base + "/")
    assert "Colors" in titles() and len(titles()) == 2, titles()
    other = next(e for e in d.find_elements(By.CSS_SELECTOR, ".conv") if "Colors" not in e.get_attribute("textContent"))
    other.find_element(By.CSS_SELECTOR, "button.delete").click()
    d.switch_to.alert.accept()
    assert titles() == ["Colors"], titles()
    assert [c["title"] for c in stored(d)] == ["Colors"]
    shot(d, "chat-second-desktop")

    # Phone: the same page in a narrow window, sidebar behind the menu button.
    viewport(d, PHONE)
    load(d, base + "/")
    assert not by_id(d, "sidebar").is_displayed()
    shot(d, "chat-phone")
    by_id(d, "toggle-sidebar").click()
    assert by_id(d, "sidebar").is_displayed()
    shot(d, "chat-phone-sidebar")
    viewport(d, DESKTOP)
    print("chat page: ok")


# What the fake answer says: HTML and script in every form a model could write it.
EVIL = (
    'Here is <img src=x onerror="window.__xss=1"> and <script>window.__xss=2</script>.\n\n'
    "```html\n<script>window.__xss=3</script>\n<img src=x onerror=window.__xss=4>\n```\n\n"
    "[click me](javascript:window.__xss=5) and **<b onmouseover=window.__xss=6>bold</b>** and "
    '<a href="https://example.com/evil">raw link</a> and [docs](https://example.com/docs).\n'
    "- <iframe src=javascript:window.__xss=7></iframe>\n"
)


class CannedChat(http.server.BaseHTTPRequestHandler):
    """A proxy in front of the real server that answers chat completions with a canned SSE
    stream (EVIL in small pieces): the page, its assets and their CSP are the server's own."""

    upstream = ""

    def log_message(self, *a):
        pass

    def forward(self, method):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        if method == "POST" and self.path == "/v1/chat/completions":
            return self.canned()
        req = urllib.request.Request(self.upstream + self.path, data=body, method=method)
        for h in ("Authorization", "Content-Type"):
            if self.headers.get(h):
                req.add_header(h, self.headers[h])
        try:
            r = urllib.request.urlopen(req, timeout=60)
        except urllib.error.HTTPError as e:
            r = e
        data = r.read()
        self.send_response(r.status if hasattr(r, "status") else r.code)
        for k, v in r.headers.items():
            if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def canned(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        pieces = [EVIL[i:i + 7] for i in range(0, len(EVIL), 7)]
        for i, p in enumerate(pieces):
            chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": QWEN,
                     "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
            if i == 0:
                chunk["choices"][0]["delta"]["role"] = "assistant"
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.005)
        end = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": QWEN,
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": QWEN, "choices": [],
                 "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces), "total_tokens": 5 + len(pieces)}}
        for c in (end, usage):
            self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def do_GET(self):
        self.forward("GET")

    def do_POST(self):
        self.forward("POST")


def model_output_is_text(s, d):
    CannedChat.upstream = s.base
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CannedChat)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{proxy.server_address[1]}"
    try:
        load(d, base + "/")
        js(d, "window.__csp = []; document.addEventListener('securitypolicyviolation',"
              " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
        by_id(d, "new-chat").click()
        send(d, "Show me some HTML.")
        wait(d, lambda: answers(d) and not pending(d), 30, "the canned answer")
        time.sleep(0.5)  # anything that would load or run has had its chance
        a = answers(d)[-1].find_element(By.CSS_SELECTOR, ".content")
        text = a.text
        for literal in ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>",
                        "<script>window.__xss=3</script>", "<b onmouseover=window.__xss=6>bold</b>",
                        '<a href="https://example.com/evil">raw link</a>', "[click me](javascript:window.__xss=5)",
                        "<iframe src=javascript:window.__xss=7></iframe>"]:
            assert literal in text, (literal, text)
        bad = a.find_elements(By.CSS_SELECTOR, "img, script, iframe, b, object, embed, style, [onerror], [onmouseover]")
        assert not bad, [e.get_attribute("outerHTML") for e in bad]
        links = a.find_elements(By.TAG_NAME, "a")
        # Links only where an http(s) URL was written (the bare URL inside the raw <a> tag is
        # linked as a URL, its tag stays text); never the javascript: one.
        assert [(x.get_attribute("href"), x.text) for x in links] == [
            ("https://example.com/evil", "https://example.com/evil"), ("https://example.com/docs", "docs")], \
            [x.get_attribute("outerHTML") for x in links]
        assert all("noopener" in x.get_attribute("rel") for x in links)
        assert a.find_elements(By.CSS_SELECTOR, "strong") and a.find_elements(By.CSS_SELECTOR, ".code pre code")
        assert js(d, "return typeof window.__xss") == "undefined"
        # Nothing was even attempted: the CSP never had to block anything.
        assert js(d, "return window.__csp") == [], js(d, "return window.__csp")
        shot(d, "chat-untrusted-output-desktop")
    finally:
        proxy.shutdown()
    print("model output rendered as text: ok")


def api_key_and_completion_view(s, d, key):
    base = s.base
    st, _, _ = http_get(base + "/")
    assert st == 200  # the page itself is open; its data is not
    assert http_get(base + "/ui/info")[0] == 401
    d.get(base + "/")
    wait(d, lambda: by_id(d, "key-dialog").get_attribute("open") is not None, 30, "the key dialog")
    shot(d, "chat-api-key-desktop")
    by_id(d, "key-input").send_keys("wrong-key", Keys.ENTER)
    wait(d, lambda: "did not accept" in by_id(d, "key-message").text, 30, "the wrong key to be refused")
    assert by_id(d, "key-dialog").get_attribute("open") is not None
    by_id(d, "key-input").send_keys(key, Keys.ENTER)
    wait(d, lambda: "ready" in d.find_element(By.TAG_NAME, "body").get_attribute("class"), 30, "the page with the key")
    assert js(d, "return sessionStorage.getItem('switchyard.apiKey')") == key
    local = js(d, "return JSON.stringify(Object.assign({}, localStorage))")
    assert key not in local, local
    info = json.loads(http_get(base + "/ui/info", key)[2])
    # The plain completion view for a model without a chat template.
    if not info["chat"]:
        assert by_id(d, "mode").text.startswith("completion"), by_id(d, "mode").text
        set_setting(d, "temperature", 0)
        set_setting(d, "max_tokens", 10)
        send(d, "The capital of France is")
        wait(d, lambda: answers(d) and not pending(d), 120, "the completion")
        msgs = current_messages(d)
        assert [m["role"] for m in msgs] == ["prompt", "completion"], msgs
        want = http_post(base + "/v1/completions", {"prompt": "The capital of France is", "temperature": 0,
                                                      "max_tokens": 10}, key)["choices"][0]["text"]
        assert msgs[1]["content"] == want, (msgs[1]["content"], want)
        shot(d, "completion-view-desktop")
        REPORT["completion view"] = "tested (model without a chat template)"
    else:
        REPORT["completion view"] = f"NOT tested: {GEMMA} has a chat template"
    # The dashboard in the same tab uses the same key.
    load_dash(d, base)
    print("api key: ok")
    # A new tab has no key.
    d.switch_to.new_window("tab")
    d.get(base + "/")
    wait(d, lambda: by_id(d, "key-dialog").get_attribute("open") is not None, 30, "the key dialog in a new tab")
    d.close()
    d.switch_to.window(d.window_handles[0])


def load_dash(d, base):
    d.get(base + "/dashboard")
    wait(d, lambda: by_id(d, "d-status").text == "live", 30, "the dashboard to go live")
    wait(d, lambda: by_id(d, "v-running").text != "–", 10, "the first readings")


def dashboard(s, d):
    base = s.base
    load_dash(d, base)
    facts = by_id(d, "facts").text
    assert "device:" in facts and "SIMD level:" in facts and "version:" in facts, facts
    flags = by_id(d, "t-flags").text
    assert "--max-num-seqs" in flags and "--kv-cache-memory" in flags, flags
    assert by_id(d, "d-model").text == GEMMA
    assert by_id(d, "v-running").text == "0"
    tokens_before = metric(base, "switchyard:generation_tokens_total")
    seen = {"running": 0, "gen": 0.0, "kv": 0.0, "4xx": 0.0, "ttft": False}
    stop = threading.Event()

    def load_worker():
        while not stop.is_set():
            http_post(base + "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 48, "ignore_eos": True})

    workers = [threading.Thread(target=load_worker, daemon=True) for _ in range(4)]
    for w in workers:
        w.start()

    def num(i):
        try:
            return float(by_id(d, i).text.rstrip("%"))
        except ValueError:  # "–": no reading yet
            return 0.0

    def sample():
        seen["running"] = max(seen["running"], num("v-running"))
        seen["gen"] = max(seen["gen"], num("v-gen-tps"))
        seen["kv"] = max(seen["kv"], num("v-kv"))
        seen["4xx"] = max(seen["4xx"], num("v-4xx"))
        seen["ttft"] = seen.get("ttft") or by_id(d, "v-ttft-p50").text.replace(".", "").isdigit()

    t0 = time.time()
    while time.time() - t0 < 30 and not (seen["running"] and seen["gen"] and seen.get("ttft") and time.time() - t0 > 8):
        sample()
        time.sleep(0.2)
    # Some error responses too, for the errors chart.
    for _ in range(3):
        http_get(base + "/v1/nope")
    t1 = time.time()
    while time.time() - t1 < 5 and not seen["4xx"]:
        sample()
        time.sleep(0.1)
    shot(d, "dashboard-desktop")
    viewport(d, PHONE)
    time.sleep(1.5)
    shot(d, "dashboard-phone")
    viewport(d, DESKTOP)
    stop.set()
    for w in workers:
        w.join(timeout=120)
    assert seen["running"] >= 1, seen
    assert seen["gen"] > 0 and seen["kv"] > 0, seen
    assert seen["4xx"] > 0, seen
    assert seen["ttft"], "no TTFT percentile shown under load"
    assert metric(base, "switchyard:generation_tokens_total") > tokens_before
    totals = by_id(d, "t-totals").text
    assert "generated tokens" in totals and "404" in by_id(d, "t-status").text, (totals, by_id(d, "t-status").text)
    # The load went away: running goes back to 0 on the page.
    wait(d, lambda: by_id(d, "v-running").text == "0", 30, "running to return to 0")
    print(f"dashboard: ok (peak running {seen['running']:.0f}, peak generation {seen['gen']:.1f} tok/s)")


def no_webui(s):
    for path in ["/", "/dashboard", "/ui/chat.js", "/ui/style.css", "/ui/info"]:
        st, _, body = http_get(s.base + path)
        assert st == 404, (path, st, body)
    assert http_get(s.base + "/v1/models")[0] == 200
    print("--no-webui: ok")


def asset_bytes():
    d = os.path.join(ROOT, "crates", "http", "webui")
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def main():
    d = browser(DESKTOP)
    try:
        s = Server(QWEN)
        try:
            chat(s, d)
            model_output_is_text(s, d)
        finally:
            s.stop()
        s = Server(GEMMA, "--api-key", "webui-key-1")
        try:
            api_key_and_completion_view(s, d, "webui-key-1")
        finally:
            s.stop()
        s = Server(GEMMA, "--max-num-seqs", "4")
        try:
            dashboard(s, d)
        finally:
            s.stop()
    finally:
        d.quit()
    s = Server(GEMMA, "--no-webui")
    try:
        no_webui(s)
    finally:
        s.stop()
    REPORT["embedded assets"] = f"{asset_bytes()} bytes"
    for k, v in REPORT.items():
        print(f"{k}: {v}")
    print("web UI tests: all passed")


if __name__ == "__main__":
    main()
