#!/usr/bin/env python3
"""The live page /debug/goro/ in a real browser: headless Chromium driven through
chromedriver's WebDriver protocol (plain HTTP and JSON: no pip package).

  test_live_page.py --leaky PATH [--many-groups PATH] [--screenshot FILE]

1. Starts examples/leak_hunt/leaky on a free port; six times: one order
   (GET /process) then one leak-watch sample (GET /debug/goro/leaks/sample),
   so the watch sees price_worker grow by 4 in each step.
2. Without JavaScript (the HTML as served): the suspect row names price_worker.
3. In Chromium (?refresh=1): the rendered DOM has a suspect row naming
   price_worker with 24 tasks; two more orders and samples later, the page's
   auto-refresh shows 32 (polled with a deadline); pause stops the refresh;
   the filter hides other groups; opening the group shows its stack and its
   tasks with "created by" (fetched from /debug/goro/group). A screenshot is
   saved (--screenshot). Without JavaScript the group's link leads to its own
   server-rendered page with the same stack and tasks.
4. With --many-groups: the time to load and render a page of 10,000 groups
   is measured and printed (not asserted), with the page's size, its first
   contentful paint, a sort by wait reason, and opening one group.

Exit 77 (skipped, for meson) when chromium, chromedriver or the programs are missing.
"""
import argparse
import base64
import json
import re
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

SKIP = 77


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode("utf-8", "replace")


def wait_until(pred, what, deadline=30.0):
    end = time.monotonic() + deadline
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


class Program:
    """A child program that prints `listening on 127.0.0.1:PORT` first."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("listening on 127.0.0.1:"):
            self.close()
            raise AssertionError("%s did not start: %r" % (argv[0], line))
        self.port = int(line.rsplit(":", 1)[1])
        self.base = "http://127.0.0.1:%d" % self.port

    def get(self, path):
        return http("GET", self.base + path)

    def close(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


class Browser:
    """One headless Chromium session through chromedriver (W3C WebDriver)."""

    def __init__(self, chromium, chromedriver):
        self.port = free_port()
        self.driver = subprocess.Popen([chromedriver, "--port=%d" % self.port],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d" % self.port
        wait_until(self._ready, "chromedriver")
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--no-first-run"]}}}}
        self.session = json.loads(http("POST", self.url + "/session", caps, timeout=120))["value"]["sessionId"]
        self.cmd("POST", "timeouts", {"script": 60000, "pageLoad": 120000})

    def _ready(self):
        try:
            return json.loads(http("GET", self.url + "/status", timeout=2))["value"]["ready"]
        except OSError:
            return False

    def cmd(self, method, path, body=None):
        return json.loads(http(method, "%s/session/%s/%s" % (self.url, self.session, path), body, timeout=180))["value"]

    def go(self, url):
        self.cmd("POST", "url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path):
        png = base64.b64decode(self.cmd("GET", "screenshot"))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)
        return len(png)

    def close(self):
        try:
            http("DELETE", "%s/session/%s" % (self.url, self.session), timeout=30)
        except OSError:
            pass
        self.driver.terminate()
        try:
            self.driver.wait(10)
        except subprocess.TimeoutExpired:
            self.driver.kill()
            self.driver.wait()


SUSPECTS_JS = """return Array.prototype.map.call(document.querySelectorAll('#suspects tr.suspect'), function(r) {
  return [r.querySelector('.fn').textContent, parseInt(r.querySelector('.count').textContent, 10)]; });"""


def price_worker_count(browser):
    for fn, count in browser.js(SUSPECTS_JS):
        if "price_worker" in fn:
            return count
    return None


def check(cond, what):
    print(("ok: " if cond else "NOT OK: ") + what, flush=True)
    if not cond:
        raise AssertionError(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--leaky", default=os.environ.get("LEAKY_BIN"))
    ap.add_argument("--many-groups", default=os.environ.get("MANY_GROUPS_BIN"))
    ap.add_argument("--screenshot", default=None)
    a = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        print("skipped: chromium or chromedriver not installed (Debian: chromium chromium-driver)")
        return SKIP
    if not a.leaky or not os.path.exists(a.leaky):
        print("skipped: no leaky program (--leaky or LEAKY_BIN)")
        return SKIP

    leaky = Program([a.leaky, "--port", "0"])
    browser = None
    try:
        def order_and_sample():
            check(leaky.get("/process").startswith("order "), "an order was processed")
            leaky.get("/debug/goro/leaks/sample")

        for _ in range(6):
            order_and_sample()
        html = leaky.get("/debug/goro/")
        check("<tr class=suspect" in html and "price_worker" in html.split("<section id=groups>")[0],
              "without JavaScript, the served HTML has a suspect row naming price_worker")
        check("<script src" not in html and "<link" not in html and "@import" not in html,
              "the page fetches nothing else")
        m = re.search(r"<tr class=group data-key=(0x[0-9a-f]+)[^\n]*<td class=fn><a href='group\?key=\1'>[^<]*price_worker",
                      html)
        check(m is not None, "without JavaScript, the price_worker group links to its own page")
        gp = leaky.get("/debug/goro/group?key=" + m.group(1))
        check("<pre class=stack>" in gp and "price_worker" in gp and "leaky.cpp" in gp and
              "created by" in gp and "process_order" in gp,
              "the group's page shows its stack and its tasks with created by")

        browser = Browser(chromium, chromedriver)
        browser.go(leaky.base + "/debug/goro/?refresh=1")
        check(price_worker_count(browser) == 24, "the rendered DOM has price_worker as a suspect with 24 tasks")
        summary = browser.js("return document.getElementById('summary').textContent;")
        check("leak suspect" in summary, "the summary line counts the suspects: " + summary)

        for _ in range(2):
            order_and_sample()
        wait_until(lambda: price_worker_count(browser) == 32, "the refreshed count 32")
        check(True, "after auto-refresh the suspect row shows 32 tasks")

        # Pause: wait out any refresh in flight, then new leaks must not appear.
        browser.js("document.getElementById('pause').click();")
        check(browser.js("return document.getElementById('pause').textContent;") == "resume", "pause toggles")
        time.sleep(2.5)
        order_and_sample()
        time.sleep(3)
        check(price_worker_count(browser) == 32, "while paused the page keeps its count")
        browser.js("document.getElementById('pause').click();")
        wait_until(lambda: price_worker_count(browser) == 36, "the count 36 after resuming")
        check(True, "after resuming the page refreshes again (36)")

        # Filter, then open the price_worker group: its stack and tasks.
        visible = browser.js("""var f=document.getElementById('filter'); f.value='price_worker';
            f.dispatchEvent(new Event('input'));
            return Array.prototype.filter.call(document.querySelectorAll('#groups tr.group'),
              function(r){return !r.hidden;}).map(function(r){return r.querySelector('td.fn').textContent;});""")
        check(len(visible) >= 1 and all("price_worker" in fn for fn in visible),
              "the filter keeps only price_worker groups: %r" % visible)
        browser.js("""var row=Array.prototype.find.call(document.querySelectorAll('#groups tr.group'),
              function(r){return !r.hidden;});
            row.querySelector('td.fn a').click();""")
        opened = wait_until(lambda: browser.js("""var d=document.querySelector('#groups tr.detail');
            var s=d&&d.querySelector('pre.stack'),t=d&&d.querySelector('pre.tasks');
            return s&&t?[d.previousElementSibling.dataset.key,s.innerText,t.innerText]:null;"""), "the opened group")
        check(opened[0] == m.group(1), "a click opens the group under its row")
        check("price_worker" in opened[1] and "leaky.cpp" in opened[1], "the group shows its stack")
        check("process_order" in opened[2] and "created by" in opened[2], "the group lists its tasks with created by")
        browser.js("var f=document.getElementById('filter'); f.value=''; f.dispatchEvent(new Event('input'));")
        if a.screenshot:
            n = browser.screenshot(a.screenshot)
            check(n > 1000, "screenshot saved to %s (%d bytes)" % (a.screenshot, n))

        if a.many_groups and os.path.exists(a.many_groups):
            many = Program([a.many_groups, "10000"])
            try:
                size = len(many.get("/debug/goro/").encode())
                t0 = time.monotonic()
                browser.go(many.base + "/debug/goro/?refresh=3600")
                wall = time.monotonic() - t0
                rows, timing = browser.js("""var t=performance.timing;
                    var p=performance.getEntriesByName('first-contentful-paint');
                    return [document.querySelectorAll('#groups tr.group').length,
                            [t.responseEnd-t.requestStart, t.domContentLoadedEventEnd-t.navigationStart,
                             t.loadEventEnd-t.navigationStart, p.length?Math.round(p[0].startTime):-1]];""")
                check(rows == 10000, "a page of 10,000 groups renders every group")
                print("measured: 10,000 groups (%d KiB): server response %d ms, DOMContentLoaded %d ms, load %d ms, "
                      "first contentful paint %d ms, navigation seen by the driver %.0f ms"
                      % (size // 1024, timing[0], timing[1], timing[2], timing[3], wall * 1000), flush=True)
                sort_ms = browser.js("""var t=performance.now();
                    document.querySelector('#groups th[data-sort=labels]').click();
                    document.body.offsetHeight;  // the layout it causes
                    return performance.now()-t;""")
                first = browser.js("return document.querySelector('#groups tr.group').cells[4].textContent;")
                check(first == "group=0", "sorting by label puts group=0 first (%r)" % first)
                t0 = time.monotonic()
                browser.js("document.querySelector('#groups tr.group td.fn a').click();")
                wait_until(lambda: browser.js("return !!document.querySelector('#groups tr.detail pre.tasks');"),
                           "the opened group of the 10,000")
                open_ms = (time.monotonic() - t0) * 1000
                print("measured: 10,000 groups: sort by label %.0f ms, open a group %.0f ms (as seen by the driver)"
                      % (sort_ms, open_ms), flush=True)
            finally:
                many.close()
    finally:
        if browser:
            browser.close()
        leaky.close()
    print("live page: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
