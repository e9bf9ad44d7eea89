"""A real headless Chromium for the status page's tests, driven by Selenium
through Debian's chromium-driver (never a driver or browser downloaded by
Selenium: both paths are given).

:func:`chromium_or_skip` skips a test, with the reason, where Chromium, its
driver or Selenium cannot be had.  :class:`Browser` is one browser with a
fresh profile; it records the console and the network (Chrome's
``performance`` log) so that tests can check that a page logged no error and
made no request outside its origin.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import unittest
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

from tests.polling import wait_for

T = TypeVar("T")
HINT = ".ci/run installs Debian's chromium and chromium-driver when apt-get is available"
#: The flags the issue asks for: headless, no sandbox (root in CI), and
#: nothing that talks to the network by itself.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,1000")


def chromium_or_skip() -> tuple[str, str]:
    """The paths of chromium and chromedriver (or skip the test, saying why)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise unittest.SkipTest("selenium is not installed (it is in the test extra)") from None
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None:
        raise unittest.SkipTest(f"chromium is not installed ({HINT})")
    if driver is None:
        raise unittest.SkipTest(f"chromedriver is not installed ({HINT})")
    return browser, driver


@dataclass
class Request:
    """One request the browser made (from Network.requestWillBeSent)."""

    url: str
    method: str
    headers: dict[str, str]
    document: str  # the URL of the document that made it


@dataclass
class Browser:
    """One headless Chromium with a fresh profile (removed by :meth:`quit`)."""

    driver: Any
    profile: str
    requests: list[Request] = field(default_factory=list)
    statuses: list[tuple[str, int]] = field(default_factory=list)  # (url, status)
    console: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls) -> Browser:
        browser_path, driver_path = chromium_or_skip()
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        profile = tempfile.mkdtemp(prefix="bridge-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = browser_path
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        try:
            driver = webdriver.Chrome(options=options,
                                      service=Service(executable_path=driver_path))
        except Exception:
            shutil.rmtree(profile, ignore_errors=True)
            raise
        return cls(driver, profile)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- what the browser did ---------------------------------------------------------

    def collect(self) -> None:
        """Move the console and network logs gathered so far into
        :attr:`console`, :attr:`requests` and :attr:`statuses`."""
        self.console.extend(self.driver.get_log("browser"))
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.requestWillBeSent":
                request = params["request"]
                self.requests.append(Request(request["url"], request["method"],
                                             dict(request.get("headers", {})),
                                             params.get("documentURL", "")))
            elif message["method"] == "Network.responseReceived":
                response = params["response"]
                self.statuses.append((response["url"], int(response["status"])))

    def requests_of(self, origin: str) -> list[Request]:
        """The requests made by documents of ``origin`` (the browser's own
        start page makes others before the test navigates)."""
        self.collect()
        return [r for r in self.requests if r.document.startswith(origin + "/")]

    def errors(self) -> list[dict[str, Any]]:
        """Console messages of level warning or worse (CSP violations, failed
        loads, uncaught exceptions are all SEVERE)."""
        self.collect()
        return [entry for entry in self.console if entry["level"] in ("SEVERE", "WARNING")]

    # -- the page -------------------------------------------------------------------

    def open(self, url: str) -> None:
        self.driver.get(url)

    def run(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, selector: str) -> str:
        """The text content of the first element matching ``selector`` ("" if none)."""
        value = self.run("const e = document.querySelector(arguments[0]);"
                         "return e ? e.textContent : '';", selector)
        return str(value)

    def visible(self, selector: str) -> bool:
        return bool(self.run("const e = document.querySelector(arguments[0]);"
                             "return !!e && e.offsetParent !== null;", selector))

    def wait(self, predicate: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
        return wait_for(predicate, what, timeout)

    def wait_text(self, selector: str, check: Callable[[str], bool], what: str,
                  timeout: float = 10.0) -> str:
        seen: list[str] = []

        def matches() -> str | None:
            text = self.text(selector)
            seen[:] = [text]
            return text if check(text) else None

        try:
            return self.wait(matches, what, timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; {selector} shows {seen[-1] if seen else None!r}"
                                 ) from None

    def fill(self, selector: str, text: str) -> None:
        element = self.driver.find_element("css selector", selector)
        element.clear()
        element.send_keys(text)

    def select(self, selector: str, value: str) -> None:
        """Choose an option of a <select> (as a person does: a change event)."""
        from selenium.webdriver.support.select import Select

        Select(self.driver.find_element("css selector", selector)).select_by_value(value)

    def click(self, selector: str) -> None:
        self.driver.find_element("css selector", selector).click()

    def element_screenshot(self, selector: str, path: str) -> None:
        """A PNG of one element (the first matching ``selector``), whole: the
        window is made as tall as the page first (no scrollbar to change the
        layout while the picture is taken), then given its size back."""
        import base64

        with self._as_tall_as_the_page():
            x, y, width, height = self.run(
                "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
                "return [r.left + scrollX, r.top + scrollY, r.width, r.height];", selector)
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "clip": {"x": max(0, x - 4), "y": max(0, y - 4),
                                          "width": width + 8, "height": height + 8,
                                          "scale": 1}})
        with open(path, "wb") as target:
            target.write(base64.b64decode(shot["data"]))

    def screenshot(self, path: str) -> None:
        """A PNG of the whole page (the window is made as tall as the page
        for it, then given its size back)."""
        with self._as_tall_as_the_page():
            self.driver.save_screenshot(path)

    @contextlib.contextmanager
    def _as_tall_as_the_page(self) -> Iterator[None]:
        driver = self.driver
        size = driver.get_window_size()
        page, inner = self.run("window.scrollTo(0, 0); return [document.documentElement."
                               "scrollHeight, window.innerHeight];")
        driver.set_window_size(size["width"], size["height"] - inner + page)
        try:
            yield
        finally:
            driver.set_window_size(size["width"], size["height"])
