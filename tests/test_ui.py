"""The status page's routes on the in-memory bridge: GET / for browsers and for
everyone else, the page's files, their headers, the token, the ui setting,
admission and the access log.  The page's behaviour in a real browser is
tests/test_ui_browser.py."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from bridge.http.page import ASSETS, CSP, wants_html
from tests.http_harness import TOKEN, Harness, HarnessTestCase, Response, auth
from tests.test_upstreams_http import ADMIN, SCOPED, three_upstreams

ROOT = Path(__file__).resolve().parent.parent
UI = ROOT / "bridge" / "http" / "ui"
BROWSER = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
           "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")
CURL = "*/*"

INDEX = {
    "name": "bridge",
    "openapi": "/openapi.json",
    "page": "/",
    "upstreams": ["default"],
    "routes": [
        {"path": "/send", "methods": ["POST"], "summary": "Write lines to the upstream"},
        {"path": "/request", "methods": ["POST"],
         "summary": "Write lines and return the upstream's replies"},
        {"path": "/healthz", "methods": ["GET", "HEAD"],
         "summary": "Liveness: the process serves requests"},
        {"path": "/readyz", "methods": ["GET", "HEAD"],
         "summary": "Readiness: every required upstream is connected"},
        {"path": "/status", "methods": ["GET", "HEAD"],
         "summary": "What the bridge and its upstream(s) are doing"},
        {"path": "/metrics", "methods": ["GET", "HEAD"], "summary": "Prometheus metrics"},
        {"path": "/events", "methods": ["GET"],
         "summary": "Server-Sent Events: what the upstream says unasked"},
        {"path": "/u/{upstream}/send", "methods": ["POST"],
         "summary": "Write lines to the upstream"},
        {"path": "/u/{upstream}/request", "methods": ["POST"],
         "summary": "Write lines and return the upstream's replies"},
        {"path": "/u/{upstream}/events", "methods": ["GET"],
         "summary": "Server-Sent Events: what the upstream says unasked"},
        {"path": "/u/{upstream}/readyz", "methods": ["GET", "HEAD"],
         "summary": "Readiness of one upstream"},
        {"path": "/openapi.json", "methods": ["GET", "HEAD"], "summary": "This OpenAPI document"},
        {"path": "/", "methods": ["GET", "HEAD"],
         "summary": "The status page for a browser (Accept: text/html), else this index of "
                    "the routes"},
    ],
}


class UITestCase(HarnessTestCase):
    def assertSecured(self, response: Response) -> None:
        """The headers every answer of the page's routes carries."""
        self.assertEqual(response.header(b"Content-Security-Policy"), CSP)
        self.assertEqual(response.header(b"X-Content-Type-Options"), b"nosniff")
        self.assertEqual(response.header(b"X-Frame-Options"), b"DENY")
        self.assertEqual(response.header(b"Referrer-Policy"), b"no-referrer")

    def assertPage(self, response: Response) -> None:
        self.assertEqual((response.status, response.header(b"Content-Type")),
                         (200, b"text/html; charset=utf-8"))
        self.assertEqual(response.body, (UI / "index.html").read_bytes())
        self.assertEqual(response.header(b"Vary"), b"Accept")
        self.assertSecured(response)


class PageTests(UITestCase):
    def test_a_browser_gets_the_page(self) -> None:
        harness = self.harness()
        self.assertPage(harness.call("GET", "/", headers={"Accept": BROWSER}))

    def test_any_other_client_gets_the_route_index(self) -> None:
        harness = self.harness()
        for headers in ({}, {"Accept": CURL}, {"Accept": "application/json"},
                        {"Accept": "application/json, text/html;q=0.5"},
                        {"Accept": "text/html;q=0"}):
            with self.subTest(headers=headers):
                response = harness.call("GET", "/", headers=headers)
                self.assertJSONResponse(response, 200, INDEX)
                self.assertEqual(response.header(b"Vary"), b"Accept")
                self.assertSecured(response)

    def test_the_files_of_the_page(self) -> None:
        harness = self.harness()
        for path, (name, kind) in ASSETS.items():
            with self.subTest(path=path):
                response = harness.call("GET", path.decode())
                self.assertEqual((response.status, response.header(b"Content-Type")),
                                 (200, kind))
                self.assertEqual(response.body, (UI / name).read_bytes())
                self.assertEqual(response.header(b"Content-Length"),
                                 str(len(response.body)).encode())
                self.assertSecured(response)

    def test_head(self) -> None:
        harness = self.harness()
        for path in ("/", "/ui/app.js"):
            with self.subTest(path=path):
                client = harness.client()
                client.send(b"HEAD " + path.encode() + b" HTTP/1.1\r\nHost: b\r\nAccept: "
                            + BROWSER.encode() + b"\r\n\r\n")
                raw = client.transport.value()
                head, _, body = raw.partition(b"\r\n\r\n")
                self.assertEqual((head.split(b"\r\n")[0], body), (b"HTTP/1.1 200 OK", b""))
                get = harness.call("GET", path, headers={"Accept": BROWSER})
                self.assertIn(b"Content-Length: %d" % len(get.body), head)

    def test_the_page_and_its_files_need_no_token_the_rest_does(self) -> None:
        harness = self.harness(token=TOKEN)
        self.assertPage(harness.call("GET", "/", headers={"Accept": BROWSER}))
        self.assertJSONResponse(harness.call("GET", "/"), 200, INDEX)
        for path in ASSETS:
            self.assertEqual(harness.call("GET", path.decode()).status, 200)
        for path in ("/status", "/openapi.json", "/events"):
            with self.subTest(path=path):
                self.assertErrorResponse(harness.call("GET", path), 401, "unauthorized")
        self.assertEqual(harness.call("GET", "/status", headers=auth()).status, 200)
        self.assertEqual(harness.call("GET", "/openapi.json", headers=auth()).status, 200)
        # A wrong token does not hide the page either.
        self.assertPage(harness.call("GET", "/", headers={"Accept": BROWSER,
                                                          **auth("wrong")}))

    def test_the_index_names_the_upstreams(self) -> None:
        harness = self.harness(connect=0, config=three_upstreams(SCOPED, top=ADMIN))
        self.assertJSONResponse(harness.call("GET", "/"), 200,
                                {**INDEX, "upstreams": ["default", "cache", "logs"]})
        # A scoped token opens neither /status nor /openapi.json; the page
        # still loads (and says so when it polls /status).
        self.assertPage(harness.call("GET", "/", headers={"Accept": BROWSER,
                                                          **auth("app-token")}))
        self.assertErrorResponse(harness.call("GET", "/status", headers=auth("app-token")),
                                 403, "forbidden")

    def test_no_ui_answers_the_index_only(self) -> None:
        harness = self.harness(ui=False)
        response = harness.call("GET", "/", headers={"Accept": BROWSER})
        self.assertJSONResponse(response, 200, {
            **INDEX, "page": None,
        })
        for path in ASSETS:
            with self.subTest(path=path):
                self.assertJSONResponse(harness.call("GET", path.decode()), 404, {
                    "error": "not_found", "message": f"no route {path.decode()}"})
        self.assertEqual(harness.call("GET", "/openapi.json").status, 200)

    def test_the_page_is_not_work(self) -> None:
        """The page's routes pass even when max_inflight is reached, and are
        refused neither while draining nor counted."""
        harness = self.harness(max_inflight=1)
        waiting = harness.start("POST", "/request", b"PING\n")
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        self.assertErrorResponse(harness.call("POST", "/send", b"x\n"), 429, "overloaded")
        self.assertPage(harness.call("GET", "/", headers={"Accept": BROWSER}))
        self.assertEqual(harness.call("GET", "/ui/app.js").status, 200)
        self.assertEqual(harness.call("GET", "/openapi.json").status, 200)
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        harness.upstream.peer_sends(b"PONG\r\n")
        self.assertEqual(waiting.response().status, 200)
        counters = harness.call("GET", "/status").json()["counters"]
        self.assertEqual((counters["work_requests"], counters["work_errors"]), (2, 1))
        harness.stop()  # draining: work is refused, the page is not
        self.assertErrorResponse(harness.call("POST", "/send", b"x\n"), 503, "shutting_down")
        self.assertPage(harness.call("GET", "/", headers={"Accept": BROWSER}))
        self.assertEqual(harness.call("GET", "/ui/app.css").status, 200)

    def test_the_page_stays_out_of_the_access_log(self) -> None:
        harness = self.harness(access_log=True)
        events = self.capture_logs()
        harness.call("GET", "/", headers={"Accept": BROWSER})
        harness.call("GET", "/")
        for path in ASSETS:
            harness.call("GET", path.decode())
        harness.call("GET", "/status")
        access = [formatEvent(e) for e in events if e.get("log_namespace") == "bridge.access"]
        self.assertEqual(len(access), 1, access)
        self.assertIn('"GET /status" 200', access[0])


class NegotiationTests(SynchronousTestCase):
    def test_wants_html(self) -> None:
        cases = {
            None: False, b"": False, b"*/*": False, b"application/json": False,
            b"text/html": True, BROWSER.encode(): True,
            b"text/html;q=0": False, b"application/json, text/html;q=0.9": False,
            b"text/html, application/json": True, b"text/html;q=0.5, */*;q=0.1": True,
            b"TEXT/HTML": True, b"text/html;q=bad": False, b"text/plain": False,
        }
        for accept, expected in cases.items():
            with self.subTest(accept=accept):
                self.assertEqual(wants_html(accept), expected)


class StaticPageTests(SynchronousTestCase):
    """What the page's files may and may not hold: everything from the
    bridge's own origin, nothing inline that the CSP would refuse."""

    def test_the_page_loads_only_its_own_files(self) -> None:
        html = (UI / "index.html").read_text("utf-8")
        references = re.findall(r'\b(?:src|href)="([^"]*)"', html)
        self.assertEqual(sorted(references), ["/ui/app.css", "/ui/app.js", "/ui/favicon.svg"])
        for path in references:
            self.assertIn(path.encode(), ASSETS)
        self.assertNotRegex(html, r"<script(?![^>]*\bsrc=)", "inline script")
        self.assertNotRegex(html, r"<style", "inline style element")
        self.assertNotRegex(html, r"\sstyle=", "inline style attribute")
        self.assertNotRegex(html, r"\son[a-z]+=", "inline event handler")

    def test_no_file_names_another_origin(self) -> None:
        for path in UI.iterdir():
            with self.subTest(file=path.name):
                text = path.read_text("utf-8")
                # The SVG's xmlns is a name, not a request.
                text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
                self.assertNotRegex(text, r"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}")
                self.assertNotIn("@import", text)
                self.assertNotIn("innerHTML", text)
                self.assertNotIn("eval(", text)

    def test_every_file_of_the_page_is_package_data(self) -> None:
        """The wheel (and so the Docker image) carries every file of the page."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
        patterns = project["tool"]["setuptools"]["package-data"]["bridge.http"]
        files = sorted(path.name for path in UI.iterdir())
        self.assertEqual(files, sorted([*(name for name, _ in ASSETS.values()), "index.html"]))
        for name in files:
            with self.subTest(file=name):
                self.assertTrue(any(fnmatch.fnmatch(f"ui/{name}", p) for p in patterns))


class SettingTests(SynchronousTestCase):
    def test_the_ui_setting(self) -> None:
        from bridge.app.cli import parse_config

        self.assertTrue(parse_config([], {})[0].ui)
        self.assertFalse(parse_config(["--no-ui"], {})[0].ui)
        self.assertFalse(parse_config([], {"BRIDGE_UI": "false"})[0].ui)
        self.assertTrue(parse_config(["--ui"], {"BRIDGE_UI": "false"})[0].ui)


class StartupTests(SynchronousTestCase):
    def test_a_missing_file_fails_at_start(self) -> None:
        from bridge.http import page

        original = page.read_file

        def missing(name: str) -> bytes:
            if name == "app.js":
                raise FileNotFoundError(name)
            return original(name)

        self.patch(page, "read_file", missing)
        self.assertRaises(FileNotFoundError, Harness.create)
        # Without the page, nothing is read.
        harness = Harness.create(ui=False)
        self.assertEqual(harness.service.api.page, None)
        harness.close_everything()
