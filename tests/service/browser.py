"""What the browser tests share: a headless Chromium driven by Selenium (the `browser` fixture in
conftest.py starts one per test module), the upload page's gestures, and the page audits (the
Content-Security-Policy console, axe-core)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# On a photo's own page (`#result`): its status badge and its boxes.
RESULT_STATUS = ("css selector", "#result .status")
RESULT_BOXES = ("css selector", "#result .boxes .box")
AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"


class PageWait(WebDriverWait):
    """WebDriverWait whose condition is read again when a polling page swaps the node out mid-read.

    Chromium reports that race as "Node with given id does not belong to the document", a generic
    WebDriverException that WebDriverWait would raise at once (it failed a CI run); any other error
    still fails the test at once."""

    def until(self, method, message: str = ""):
        def settled(driver):
            try:
                return method(driver)
            except StaleElementReferenceException:
                return False
            except WebDriverException as error:
                if "does not belong to the document" in str(error.msg):
                    return False
                raise

        return super().until(settled, message)


def start_chromium(*arguments: str) -> object:
    """Headless Chromium driven by Selenium, with `arguments` besides ours (e.g. a fake camera)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are needed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", *arguments):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for CSP reports
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def choose_and_send(browser, live_server, *photos: Path) -> None:
    """On the upload page: choose the photos and press Estimate."""
    from selenium.webdriver.common.by import By

    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys("\n".join(map(str, photos)))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def open_as_visitor(browser, live_server, path: str) -> None:
    """Open a page of the site as the visitor who owns the rows a test made for "visitor"."""
    browser.get(live_server.url + "/")
    browser.add_cookie({"name": "sessionid", "value": _session_for_visitor("visitor")})
    browser.get(live_server.url + path)


def _session_for_visitor(visitor_key: str) -> str:
    from django.contrib.sessions.backends.db import SessionStore

    from predictions.signals import VISITOR_KEY

    session = SessionStore()
    session[VISITOR_KEY] = visitor_key
    session.create()
    return session.session_key


def csp_violations(browser) -> list[str]:
    """Console messages of the page(s) since the last call that report a Content-Security-Policy refusal."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def accessibility_violations(browser) -> list[str]:
    """What axe-core (run in the page as it stands) finds wrong for people using assistive technology,
    keyboards, or poor eyesight: contrast, names of links and controls, landmarks, labels…"""
    browser.execute_script(AXE.read_text(encoding="utf-8"))
    found = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(r => done(r.violations.map(v => [v.id, v.impact, v.help,"
        " v.nodes.slice(0, 3).map(n => n.target.join(' '))])));"
    )
    return [f"{rule} ({impact}): {text} at {', '.join(where)}" for rule, impact, text, where in found]
