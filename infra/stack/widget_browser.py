#!/usr/bin/env python3
"""Drives the chat widget in headless Chromium (Debian's chromium and
chromium-driver, selenium from PyPI) for infra/gateway/tests/widget_browser.rs.

    widget_browser.py --allowed URL --refused URL --question TEXT --screenshot PATH

Opens the page on the allowed origin, waits for the launcher to be ready,
opens the panel, asks the question with Enter, waits for an answer with
its list of sources, saves a screenshot; then opens the page on the other
origin and reads what the widget says there. Prints one JSON object on
stdout for the test to assert on; assertions are the test's, not this
script's. Exit 3 (with {"missing": ...}) when the browser or the driver is
not installed, 2 when the browser ran but the page never got where it
should (the JSON says where it stopped).
"""

import argparse
import json
import os
import shutil
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
const r = document.querySelector('[data-ragway-widget]').shadowRoot;
const text = (n) => n ? n.textContent.trim() : null;
const bubbles = [...r.querySelectorAll('.m')].map((m) => ({
  kind: m.classList.contains('u') ? 'user' : m.classList.contains('e') ? 'error' : 'assistant',
  text: text(m),
}));
const last = [...r.querySelectorAll('.m.a')].pop();
const answer = last && last.querySelector('ol') ? last : null;
return {
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
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI has no user namespace sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1024,768",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


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
    print(json.dumps(out))
    driver.quit()
    sys.exit(2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--allowed", required=True)
    p.add_argument("--refused", required=True)
    p.add_argument("--question", required=True)
    p.add_argument("--screenshot", required=True)
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()

    driver = browser()
    out = {"browser": driver.capabilities.get("browserVersion")}
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        # Page A: the widget's origin is allowed.
        driver.get(a.allowed)
        state = wait(driver, "the launcher", lambda: settled(driver), a.timeout, out)
        timing = driver.execute_script(TIMING)
        allowed = {"state": state, "timing": timing}
        if timing["requested"] is not None and timing["ready"] is not None:
            allowed["tti_ms"] = round(timing["ready"] - timing["requested"], 1)
        out["allowed"] = allowed
        root = driver.find_element(By.CSS_SELECTOR, "[data-ragway-widget]").shadow_root
        root.find_element(By.CSS_SELECTOR, ".l").click()
        allowed["opened"] = driver.execute_script(SNAPSHOT)
        textarea = root.find_element(By.CSS_SELECTOR, "textarea")
        textarea.send_keys(a.question + Keys.ENTER)
        started = time.monotonic()

        def answered():
            snap = driver.execute_script(SNAPSHOT)
            done = (snap["answer"] and snap["citations"]) or snap["errors"]
            return snap if done and not snap["busy"] else None

        allowed["after"] = wait(driver, "a cited answer", answered, a.timeout, out)
        allowed["answer_ms"] = round((time.monotonic() - started) * 1000, 1)
        os.makedirs(os.path.dirname(os.path.abspath(a.screenshot)), exist_ok=True)
        driver.save_screenshot(a.screenshot)
        out["screenshot"] = os.path.abspath(a.screenshot)

        # Page B: another origin, which the widget does not allow.
        driver.get(a.refused)
        state = wait(driver, "the widget on the refused page", lambda: settled(driver), a.timeout, out)
        root = driver.find_element(By.CSS_SELECTOR, "[data-ragway-widget]").shadow_root
        root.find_element(By.CSS_SELECTOR, ".l").click()
        out["refused"] = {"state": state, "page": driver.execute_script(SNAPSHOT)}
    finally:
        driver.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
