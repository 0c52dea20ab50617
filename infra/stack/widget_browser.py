#!/usr/bin/env python3
"""Drives the chat widget in headless Chromium (Debian's chromium and
chromium-driver, selenium from PyPI) for infra/gateway/tests/widget_browser.rs.

    widget_browser.py --allowed URL --refused URL --question TEXT --screenshot PATH
                      [--follow-up TEXT] [--fallback URL]

Opens the page on the allowed origin, waits for the launcher to be ready,
opens the panel, asks the question with Enter, waits for an answer with
its list of sources (and the follow-up's), saves a screenshot; asks again
on the fallback page (same origin, streamed route unreachable); then opens
the page on the other origin and reads what the widget says there. Prints one JSON object on
stdout for the test to assert on; assertions are the test's, not this
script's. Exit 3 (with {"missing": ...}) when the browser or the driver is
not installed, 2 when the browser ran but the page never got where it
should (the JSON says where it stopped).
"""

import argparse
import json
import os
import sys
import time

CHROMIUM = os.environ.get("RAGWAY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RAGWAY_CHROMEDRIVER", "/usr/bin/chromedriver")

# Everything below reads the widget through its open shadow root.
STATE = """
const h = document.querySelector('[data-ragway-widget]');
return h ? h.dataset.state : null;
"""
SNAPSHOT = """
const h = document.querySelector('[data-ragway-widget]');
const r = h.shadowRoot;
const text = (n) => n ? n.textContent.trim() : null;
const bubbles = [...r.querySelectorAll('.m')].map((m) => ({
  kind: m.classList.contains('u') ? 'user' : m.classList.contains('e') ? 'error' : 'assistant',
  text: text(m),
}));
const cited = [...r.querySelectorAll('.m.a')].filter((m) => m.querySelector('ol'));
const answer = cited.pop() || null;
let stored = {};
try { stored = JSON.parse(sessionStorage.getItem('ragway-widget:' + h.dataset.ragwayWidget)) || {}; } catch (e) {}
return {
  answers: cited.length + (answer ? 1 : 0),
  route: h.dataset.route || null,
  token_requests: performance.getEntriesByType('resource').filter((e) => /\/embed\/token$/.test(e.name)).length,
  session_id: stored.session || null,
  visitor_id: stored.visitor || null,
  title: text(r.querySelector('h2')),
  panel_open: !r.querySelector('.p').hidden,
  launcher_label: r.querySelector('.l').getAttribute('aria-label'),
  focused: r.activeElement ? r.activeElement.tagName.toLowerCase() : null,
  bubbles,
  busy: r.querySelector('.log').getAttribute('aria-busy') === 'true',
  answer: answer ? [...answer.childNodes].filter((n) => n.nodeName !== 'OL')
    .map((n) => n.textContent).join('').trim() : null,
  markers: answer ? [...answer.querySelectorAll('sup a')].map((a) => a.getAttribute('aria-label')) : [],
  citations: answer ? [...answer.querySelectorAll('ol li')].map((li) => ({
    n: Number(li.dataset.n), title: text(li.querySelector('b')), snippet: text(li.querySelector('span')),
  })) : [],
  errors: [...r.querySelectorAll('.m.e')].map(text),
};
"""
TIMING = """
const one = (n) => { const e = performance.getEntriesByName(n)[0]; return e ? e.startTime : null; };
const script = performance.getEntriesByType('resource').find((e) => /\\/widget\\.js(\\?|$)/.test(e.name));
return {
  requested: script ? script.startTime : null,
  executed: one('ragway-widget:start'),
  ready: one('ragway-widget:ready'),
};
"""


def missing(what):
    print(json.dumps({"missing": what}))
    sys.exit(3)


def browser():
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} (apt-get install chromium)")
    if not os.access(CHROMEDRIVER, os.X_OK):
        missing(f"{CHROMEDRIVER} (apt-get install chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("the selenium package (pip install -r infra/stack/browser-requirements.txt)")
    # Never let Selenium Manager look for a browser or a driver online.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The page's console (CORS refusals show there only) goes into the JSON.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI has no user namespace sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1024,768",
        "--no-first-run",
        "--disable-extensions",
        *os.environ.get("RAGWAY_CHROMIUM_ARGS", "").split(),  # for debugging
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def console(driver, out):
    """Adds what the page logged since the last call to out["console"]."""
    try:
        entries = driver.get_log("browser")
    except Exception:  # a driver without the log endpoint
        return
    out.setdefault("console", []).extend(f"{e['level']}: {e['message']}" for e in entries)


def settled(driver):
    """The widget's state once it left `loading` (ready, refused, error)."""
    state = driver.execute_script(STATE)
    return state if state not in (None, "loading") else None


def wait(driver, what, check, timeout, out):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    out["stopped"] = f"timed out after {timeout}s waiting for {what}"
    out["page"] = driver.execute_script(SNAPSHOT) if driver.execute_script(STATE) else None
    console(driver, out)
    print(json.dumps(out))
    driver.quit()
    sys.exit(2)


def open_panel(driver):
    """Clicks the launcher; what the panel shows then."""
    from selenium.webdriver.common.by import By

    root = driver.find_element(By.CSS_SELECTOR, "[data-ragway-widget]").shadow_root
    root.find_element(By.CSS_SELECTOR, ".l").click()
    return driver.execute_script(SNAPSHOT)


def ask(driver, question, nth, timeout, out):
    """Types `question` and Enter; the page once the nth cited answer (or
    an error) is there and the widget is no longer busy."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    root = driver.find_element(By.CSS_SELECTOR, "[data-ragway-widget]").shadow_root
    root.find_element(By.CSS_SELECTOR, "textarea").send_keys(question + Keys.ENTER)

    def answered():
        snap = driver.execute_script(SNAPSHOT)
        done = snap["answers"] >= nth or snap["errors"]
        return snap if done and not snap["busy"] else None

    return wait(driver, f"cited answer {nth}", answered, timeout, out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--allowed", required=True)
    p.add_argument("--refused", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--follow-up", help="a second question in the same conversation")
    p.add_argument("--fallback", help="a page whose data-stream-api is unreachable")
    p.add_argument("--screenshot", required=True)
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()

    driver = browser()
    out = {"browser": driver.capabilities.get("browserVersion")}
    try:
        # Page A: the widget's origin is allowed.
        driver.get(a.allowed)
        state = wait(driver, "the launcher", lambda: settled(driver), a.timeout, out)
        timing = driver.execute_script(TIMING)
        allowed = {"state": state, "timing": timing}
        if timing["requested"] is not None and timing["ready"] is not None:
            allowed["tti_ms"] = round(timing["ready"] - timing["requested"], 1)
        out["allowed"] = allowed
        allowed["opened"] = open_panel(driver)
        started = time.monotonic()
        allowed["after"] = ask(driver, a.question, 1, a.timeout, out)
        allowed["answer_ms"] = round((time.monotonic() - started) * 1000, 1)
        if a.follow_up:
            allowed["follow_up"] = ask(driver, a.follow_up, 2, a.timeout, out)
        os.makedirs(os.path.dirname(os.path.abspath(a.screenshot)), exist_ok=True)
        driver.save_screenshot(a.screenshot)
        out["screenshot"] = os.path.abspath(a.screenshot)

        # The same origin, its streamed route unreachable: the buffered one answers.
        if a.fallback:
            driver.get(a.fallback)
            state = wait(driver, "the widget on the fallback page", lambda: settled(driver), a.timeout, out)
            open_panel(driver)
            out["fallback"] = {"state": state, "after": ask(driver, a.question, 1, a.timeout, out)}

        # Page B: another origin, which the widget does not allow.
        driver.get(a.refused)
        state = wait(driver, "the widget on the refused page", lambda: settled(driver), a.timeout, out)
        out["refused"] = {"state": state, "page": open_panel(driver)}
        console(driver, out)
    finally:
        driver.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
