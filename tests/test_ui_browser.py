"""The status page in a real headless Chromium, against real bridge processes
and real redis-servers (started here on free ports, stopped and started again
by their PIDs).  The class's bridge has two upstreams, ``default`` and
``cache`` (one redis-server each), so the page shows both and the try-it
panel offers the choice; the token test has a bridge of its own.

The spool's class has a bridge of its own whose upstreams' redis-server is
down until its test starts it: ``default`` with a spool, ``tiny`` with a
1 MiB spool (filled up), ``direct`` without one, and (where a tmpfs can be
mounted: root) ``small``, whose spool is on a 256 KiB tmpfs that runs out.

Skipped, with the reason, where Chromium, chromium-driver, Selenium or
redis-server cannot be had (.ci/run installs the Debian packages).

``BRIDGE_UI_SCREENSHOT=docs/status-page.png`` also writes the screenshots the
README shows (reduced to a small palette when Pillow is installed): the page,
and its upstreams with spools (``docs/status-page-spool.png``, the name with
``-spool`` added).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.browser import Browser, chromium_or_skip
from tests.polling import wait_for
from tests.servers import LOOPBACK, ServerProcess, redis_process, unused_port
from tests.support import REPO, BridgeProcess

TOKEN = "page-test-token"
NOTHING = "\N{EN DASH}"  # what the page shows for no value
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/")
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


def lines_sent(totals: str) -> int:
    """The "lines sent" total in the text of the page's totals."""
    found = re.search(r"lines sent(\d+)", totals)
    assert found is not None, totals
    return int(found.group(1))


def field_of(upstream: str, name: str) -> str:
    """The selector of one field of an upstream's card."""
    return f'[data-upstream="{upstream}"] [data-field="{name}"]'


def state_of(upstream: str) -> str:
    return field_of(upstream, "state")


def launch_bridge(*args: str) -> BridgeProcess:
    """A real bridge process, not waited for (see :func:`bridge_url`)."""
    return BridgeProcess.bridge("--listen", f"{LOOPBACK}:0", *args)


def bridge_url(process: BridgeProcess) -> str:
    """The base URL of a launched bridge, once it listens (stopped if it never does)."""

    def listening() -> int | None:
        found = LISTENING.search(process.stdout())
        if found:
            return int(found.group(1))
        if process.process.poll() is not None:
            raise AssertionError("the bridge exited\n" + process.describe())
        return None

    try:
        port = wait_for(listening, "the bridge to listen", 30.0)
    except BaseException:
        process.stop_now()
        raise
    return f"http://{LOOPBACK}:{port}"


def two_upstreams(directory: str, default: int, cache: int) -> str:
    """A configuration file: default and cache, each a redis-server; quick
    retries, so that a restarted server is found again within a second."""
    path = os.path.join(directory, "bridge.toml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(UPSTREAM.format(name="", port=default) + "\n[upstreams.cache]\n"
                     + UPSTREAM.format(port=cache))
    return path


UPSTREAM = """upstream = "127.0.0.1:{port}"
reply_framing = "resp"
backoff_initial = 0.5
backoff_max = 1
"""


def call(url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, bytes]:
    """One HTTP request from outside the browser: (status, body)."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def redis_get(port: int, key: str) -> bytes:
    """GET ``key`` straight from redis-server (an inline command): the raw reply."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as connection:
        connection.sendall(f"GET {key}\r\n".encode())
        reply = b""
        while not reply.endswith(b"\r\n") or (reply.startswith(b"$") and reply.count(b"\r\n") < 2
                                               and not reply.startswith(b"$-1")):
            data = connection.recv(65536)
            if not data:
                break
            reply += data
        return reply


class StatusPageBrowserTests(SynchronousTestCase):
    """One Chromium, two redis-servers and two bridges for the class (a
    process start is seconds on a busy 2-core machine, so they all start at
    once): the main bridge (upstreams default and cache), and one with a
    token (upstream default).  Each test begins by waiting until the page
    shows its upstreams connected, so a test that stopped redis-server and
    started it again leaves nothing behind."""

    browser: ClassVar[Browser | None] = None
    redis: ClassVar[ServerProcess | None] = None  # the upstream named default
    cache: ClassVar[ServerProcess | None] = None  # the upstream named cache
    bridges: ClassVar[list[BridgeProcess]] = []
    url: ClassVar[str] = ""
    token_url: ClassVar[str] = ""
    directory: ClassVar[str] = ""

    @classmethod
    def setUpClass(cls) -> None:
        chromium_or_skip()
        cls.bridges = []
        cls.directory = tempfile.mkdtemp(prefix="bridge-ui-test-")
        try:
            # One after the other: unused_port() gives the same port again
            # until the first server listens on it.
            cls.redis = redis_process(unused_port())  # skips without redis-server
            cls.redis.start()
            cls.cache = redis_process(unused_port())
            cls.cache.start()
            config = two_upstreams(cls.directory, cls.redis.port, cls.cache.port)
            main = launch_bridge("--config", config)
            cls.bridges.append(main)
            with_token = launch_bridge(
                "--upstream", f"{LOOPBACK}:{cls.redis.port}", "--reply-framing", "resp",
                "--token", TOKEN)
            cls.bridges.append(with_token)
            cls.browser = Browser.start()  # while the bridges start
            cls.url = bridge_url(main)
            cls.token_url = bridge_url(with_token)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.browser is not None:
            cls.browser.quit()
            cls.browser = None
        for bridge in cls.bridges:
            bridge.stop_now()
        cls.bridges = []
        for server in (cls.redis, cls.cache):
            if server is not None:
                server.close()
        cls.redis = cls.cache = None
        shutil.rmtree(cls.directory, ignore_errors=True)

    def setUp(self) -> None:
        assert self.browser is not None and self.redis is not None
        self.page = self.browser
        self.page.collect()  # forget what earlier tests left in the logs
        self.page.console.clear()
        self.page.requests.clear()
        self.page.statuses.clear()
        if not self.redis.running:
            self.redis.start()  # an earlier test failed while it was stopped

    def open(self, url: str) -> None:
        self.page.open(url + "/")
        # A blank page and no token left behind for the next test.
        self.addCleanup(self.page.open, "about:blank")
        self.addCleanup(self.page.run, "sessionStorage.clear()")

    def wait_connected(self, name: str = "default") -> None:
        self.page.wait_text(state_of(name), lambda text: text == "connected",
                            f"the page to show {name} connected")

    # -- the tests --------------------------------------------------------------------

    def test_page_loads_clean_and_shows_the_upstreams(self) -> None:
        assert self.redis is not None and self.cache is not None
        url = self.url
        self.open(url)
        self.wait_connected("default")
        self.wait_connected("cache")
        self.assertEqual(self.page.text("#lifecycle"), "running")
        self.assertEqual(self.page.text(field_of("default", "address")),
                         f"{LOOPBACK}:{self.redis.port}")
        self.assertEqual(self.page.text(field_of("cache", "address")),
                         f"{LOOPBACK}:{self.cache.port}")
        self.assertRegex(self.page.text(field_of("default", "since")),
                         r"^\d\d:\d\d:\d\d \(for (\d+[dhm] )?\d+[hms]\)$")
        self.assertEqual(self.page.text(field_of("default", "retry")), NOTHING)
        self.assertEqual(self.page.text(field_of("default", "pending")), "0")
        self.assertEqual(self.page.text(field_of("default", "congestion")), "none (0 B unsent)")
        self.assertEqual(self.page.text("#link"), "live")
        # Live: the page follows the counters without being reloaded.
        sent = lines_sent(self.page.text("#totals"))
        self.assertEqual(call(url + "/send", b"SET page-a 1\nSET page-b 2\n"),
                         (202, b'{"sent": 2}'))
        self.page.wait_text("#totals", lambda text: lines_sent(text) == sent + 2,
                            "the page to count the 2 lines sent")
        # /events as it arrives: an error reply to a /send line is published.
        call(url + "/send", b"RPUSH page-list x\nINCR page-list\n")
        self.page.wait_text("#events", lambda text: WRONGTYPE in text,
                            "the send_error event on the page")
        self.assertIn("send_error", self.page.text("#events"))
        # Pausable: held while paused, shown on resume.
        self.page.click("#events-pause")
        call(url + "/send", b"INCR page-list\n")
        self.page.wait_text("#events-count", lambda text: "1 held while paused" in text,
                            "the event to be held")
        self.assertEqual(self.page.text("#events").count("send_error"), 1)
        self.page.click("#events-pause")
        self.page.wait_text("#events", lambda text: text.count("send_error") == 2,
                            "the held event to be shown")
        # Bounded: the page keeps the newest 200 events, paused or not.
        self.page.click("#events-pause")
        self.assertEqual(call(url + "/send", b"INCR page-list\n" * 250), (202, b'{"sent": 250}'))
        self.page.wait_text("#events-count",
                            lambda text: text.endswith("200 held while paused (50 not kept)"),
                            "250 events held as 200")
        self.page.click("#events-pause")
        self.page.wait_text("#events", lambda text: "50 earlier events arrived while paused "
                            "and were not kept" in text, "the gap to be shown")
        self.assertEqual(self.page.run("return document.querySelectorAll('#events li').length"),
                         200)
        # The other upstream's events, chosen on the page.
        self.page.select("#events-upstream", "cache")
        self.page.wait_text("#events-state", lambda text: text == "(live)",
                            "the events of cache")
        self.page.click("#events-clear")
        self.assertEqual(self.page.text("#events"), "")
        call(url + "/u/cache/send", b"RPUSH cache-list x\nINCR cache-list\n")
        self.page.wait_text("#events", lambda text: text.count("send_error") == 1,
                            "the send_error event of cache")

        requests = self.page.requests_of(url)
        paths = {r.url[len(url):] for r in requests}
        self.assertLessEqual({"/", "/ui/app.js", "/ui/app.css", "/ui/favicon.svg", "/status",
                              "/events", "/u/cache/events"}, paths)
        foreign = [r.url for r in requests if not r.url.startswith(url + "/")]
        self.assertEqual(foreign, [], "requests outside the bridge's origin")
        self.assertEqual(self.page.errors(), [], "console errors or warnings")
        self.screenshot(url)

    def test_upstream_down_then_up_again(self) -> None:
        assert self.redis is not None
        self.open(self.url)
        self.wait_connected()
        self.redis.stop()
        retry = field_of("default", "retry")
        # Within 3 s of the stop: disconnected, with a countdown to the next attempt.
        self.page.wait(
            lambda: (self.page.text(state_of("default")) == "disconnected"
                     and re.fullmatch(r"in \d+\.\d s", self.page.text(retry))),
            "the page to show disconnected with a retry countdown", timeout=3.0)
        self.assertEqual(self.page.text(field_of("default", "since")), "not connected")
        self.assertIn("connection refused", self.page.text("#errors"))
        self.assertEqual(self.page.text(state_of("cache")), "connected")  # the other one
        self.redis.start()
        self.wait_connected()
        self.assertEqual(self.page.text(retry), NOTHING)

    def test_try_it_reaches_the_chosen_upstream(self) -> None:
        assert self.redis is not None and self.cache is not None
        self.open(self.url)
        self.wait_connected("default")
        self.wait_connected("cache")
        self.assertTrue(self.page.visible("#try-upstream"))  # two upstreams: a choice
        self.page.fill("#try-body", "SET page-key from-the-page")
        self.page.click('#try-form input[value="send"]')
        self.page.click("#try-submit")
        self.page.wait_text("#try-status", lambda text: text.startswith("202"), "202")
        self.assertEqual(self.page.text("#try-answer"), '{"sent": 1}')
        self.assertEqual(self.page.text("#try-target"), "POST /send")
        self.assertEqual(redis_get(self.redis.port, "page-key"), b"$13\r\nfrom-the-page\r\n")
        self.assertEqual(redis_get(self.cache.port, "page-key"), b"$-1\r\n")
        # The other upstream: /u/cache/send, to the other redis-server only.
        self.page.select("#try-upstream", "cache")
        self.page.fill("#try-body", "SET page-key for-the-cache")
        self.page.click("#try-submit")
        self.page.wait_text("#try-target", lambda text: text == "POST /u/cache/send",
                            "the call to cache")
        self.page.wait_text("#try-status", lambda text: text.startswith("202"), "202")
        self.assertEqual(redis_get(self.cache.port, "page-key"), b"$13\r\nfor-the-cache\r\n")
        self.assertEqual(redis_get(self.redis.port, "page-key"), b"$13\r\nfrom-the-page\r\n")
        # /request shows the upstream's replies exactly as the bridge answered.
        self.page.select("#try-upstream", "default")
        self.page.fill("#try-body", "GET page-key\nPING")
        self.page.click('#try-form input[value="request"]')
        self.page.fill("#try-timeout", "2")
        self.page.click("#try-submit")
        self.page.wait_text("#try-target", lambda text: text == "POST /request?timeout=2",
                            "the request")
        self.page.wait_text("#try-status", lambda text: text.startswith("200"), "200")
        self.assertEqual(self.page.text("#try-answer"), '{"replies": ["from-the-page", "PONG"]}')
        # An error answer is shown as it came.
        self.page.fill("#try-body", "PING")
        self.page.fill("#try-timeout", "999")
        self.page.click("#try-submit")
        self.page.wait_text("#try-status", lambda text: text.startswith("400"), "400")
        self.assertEqual(json.loads(self.page.text("#try-answer"))["error"], "invalid_timeout")

    def test_with_a_token(self) -> None:
        assert self.redis is not None
        url = self.token_url
        self.open(url)
        # Without the token: the page is there, its calls are refused.
        self.page.wait(lambda: self.page.visible("#token-panel"), "the page to ask for the token")
        self.assertEqual(self.page.text(state_of("default")), "")
        self.page.fill("#try-body", "SET page-token-key nope")
        self.page.click('#try-form input[value="send"]')
        self.page.click("#try-submit")
        self.page.wait_text("#try-status", lambda text: text.startswith("401"), "401")
        self.assertEqual(json.loads(self.page.text("#try-answer"))["error"], "unauthorized")
        self.assertEqual(redis_get(self.redis.port, "page-token-key"), b"$-1\r\n")

        def refused() -> set[str]:
            self.page.collect()
            return {status_url[len(url):] for status_url, status in self.page.statuses
                    if status == 401}

        self.page.wait(lambda: {"/status", "/events", "/send"} <= refused(),
                       "401 for /status, /events and /send")
        # With it: everything works, /events included.
        self.page.fill("#token-input", TOKEN)
        self.page.click('#token-form button[type="submit"]')
        self.wait_connected()
        self.assertFalse(self.page.visible("#token-panel"))
        self.assertEqual(self.page.run("return sessionStorage.getItem('bridge-token')"), TOKEN)
        self.page.fill("#try-body", "SET page-token-key yes")
        self.page.click("#try-submit")
        self.page.wait_text("#try-status", lambda text: text.startswith("202"), "202")
        self.assertEqual(redis_get(self.redis.port, "page-token-key"), b"$3\r\nyes\r\n")
        call(url + "/send", b"RPUSH page-token-list x\nINCR page-token-list\n", TOKEN)
        self.page.wait_text("#events", lambda text: WRONGTYPE in text,
                            "the send_error event through the token")
        sent = [r for r in self.page.requests_of(url)
                if r.url.split("?")[0] in (url + "/status", url + "/events", url + "/send")]
        bearer = {r.url[len(url):] for r in sent
                  if r.headers.get("Authorization") == f"Bearer {TOKEN}"}
        self.assertEqual(bearer, {"/status", "/events", "/send"})
        # Kept for the tab: a reload does not ask again.
        self.page.open(url + "/")
        self.wait_connected()
        self.assertFalse(self.page.visible("#token-panel"))

    # -- the README's screenshot ------------------------------------------------------

    def screenshot(self, url: str) -> None:
        """A screenshot of the page (always taken; written to the path in
        BRIDGE_UI_SCREENSHOT when set, after some traffic for the chart)."""
        target = os.environ.get("BRIDGE_UI_SCREENSHOT")
        if target:
            self.traffic(url, seconds=40.0)
            self.page.select("#try-upstream", "default")
            self.page.fill("#try-body", "GET page-hits\nPING")
            self.page.click('#try-form input[value="request"]')
            self.page.click("#try-submit")
            self.page.wait_text("#try-status", lambda text: text.startswith("200"), "200")
            # The other upstream down, to show a countdown and an error.
            assert self.cache is not None
            self.cache.stop()
            self.addCleanup(self.cache.start)
            self.page.wait(lambda: re.fullmatch(r"in \d+\.\d s",
                                                self.page.text(field_of("cache", "retry"))),
                           "the countdown of cache")
        directory = tempfile.mkdtemp(prefix="bridge-screenshot-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "page.png")
        self.page.screenshot(path)
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(8), b"\x89PNG\r\n\x1a\n")
        if target:
            shrink_png(path, os.path.join(REPO, target))

    def traffic(self, url: str, seconds: float) -> None:
        """Some /send and /request calls, at a varying pace (for the chart)."""
        end = time.monotonic() + seconds
        number = 0
        while time.monotonic() < end:
            number += 1
            call(url + "/send", b"".join(b"INCR page-hits\n" for _ in range(number % 7 + 1)))
            call(url + "/u/cache/send", b"SET page-cache %d\n" % number)
            if number % 3 == 0:
                call(url + "/request", b"GET page-hits\n")
            if number % 11 == 0:
                call(url + "/request", b"NOSUCHCOMMAND\n")
            time.sleep(0.05)  # the pace of the traffic, not a wait for a condition


SPOOLED = """upstream = "127.0.0.1:{port}"
reply_framing = "resp"
backoff_initial = 0.5
backoff_max = 1
"""


def spooled_upstreams(directory: str, port: int, small: str | None) -> str:
    """A configuration file: upstreams on one redis-server, ``default`` with
    a spool, ``tiny`` with a spool of 1 MiB, ``direct`` without, and
    ``small`` with its spool in the directory ``small`` (when given)."""
    path = os.path.join(directory, "spool.toml")
    spool = os.path.join(directory, "spool")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(SPOOLED.format(port=port)
                     + f'spool = "disk"\nspool_dir = "{spool}-default"\n'
                     + "\n[upstreams.tiny]\n" + SPOOLED.format(port=port)
                     + f'spool = "disk"\nspool_dir = "{spool}-tiny"\n'
                     + "spool_max_bytes = 1048576\n"
                     + "\n[upstreams.direct]\n" + SPOOLED.format(port=port))
        if small is not None:
            handle.write("\n[upstreams.small]\n" + SPOOLED.format(port=port)
                         + f'spool = "disk"\nspool_dir = "{small}/spool"\n')
    return path


def mount_tmpfs(directory: str, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``directory`` (made here): None when it
    cannot be done (not root), else the reason it could not, for a skip."""
    os.makedirs(directory)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", directory],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}"
    return None


def status_of(url: str, upstream: str) -> dict[str, Any]:
    """One upstream's part of /status, read from outside the browser."""
    status, body = call(url + "/status")
    assert status == 200, body
    document: dict[str, Any] = json.loads(body)["upstreams"][upstream]
    return document


class SpoolPageBrowserTests(SynchronousTestCase):
    """The spool on the page: one Chromium, one bridge (upstreams default and
    tiny with a spool, direct without) and one redis-server for all three,
    down until the test starts it."""

    browser: ClassVar[Browser | None] = None
    redis: ClassVar[ServerProcess | None] = None
    bridge: ClassVar[BridgeProcess | None] = None
    url: ClassVar[str] = ""
    directory: ClassVar[str] = ""
    small: ClassVar[str] = ""  # the tmpfs of the upstream named small
    no_small: ClassVar[str | None] = None  # why there is none

    @classmethod
    def setUpClass(cls) -> None:
        chromium_or_skip()
        cls.directory = tempfile.mkdtemp(prefix="bridge-ui-spool-test-")
        cls.small = os.path.join(cls.directory, "small")
        try:
            cls.no_small = mount_tmpfs(cls.small, "256k")
            cls.redis = redis_process(unused_port())  # not started: the upstream is down
            config = spooled_upstreams(cls.directory, cls.redis.port,
                                       None if cls.no_small else cls.small)
            cls.bridge = launch_bridge("--config", config)
            cls.browser = Browser.start()  # while the bridge starts
            cls.url = bridge_url(cls.bridge)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.browser is not None:
            cls.browser.quit()
            cls.browser = None
        if cls.bridge is not None:
            cls.bridge.stop_now()
            cls.bridge = None
        if cls.redis is not None:
            cls.redis.close()
            cls.redis = None
        if cls.no_small is None and os.path.ismount(cls.small):
            subprocess.run(["umount", cls.small], check=True)
        shutil.rmtree(cls.directory, ignore_errors=True)

    def test_a_disk_that_refuses_lines_shows_unavailable(self) -> None:
        if self.no_small:
            raise SkipTest(self.no_small)
        assert self.browser is not None
        page, url = self.browser, self.url
        page.open(url + "/")
        self.addCleanup(page.open, "about:blank")
        state = field_of("small", "spool-state")
        page.wait_text(state, lambda text: text == "accepting", "the spool of small")
        # 300 kB on a 256 KiB filesystem: no space left, nothing stored.
        body = (b"SET page-small " + b"y" * 1000 + b"\n") * 300
        status, answer = call(url + "/u/small/send", body)
        self.assertEqual((status, json.loads(answer)["error"]), (503, "spool_unavailable"))
        page.wait_text(state, lambda text: text == "unavailable", "the spool of small refusing")
        self.assertEqual(page.text(field_of("small", "spool-accepts")),
                         "the disk refused the last write: /send answers 503 spool_unavailable")
        self.assertEqual(page.text(field_of("small", "spool-records")), "0 records")

    def test_spool_waiting_then_delivered(self) -> None:
        assert self.browser is not None and self.redis is not None
        page, url = self.browser, self.url
        page.open(url + "/")
        self.addCleanup(page.open, "about:blank")
        spool = field_of("default", "spool-state")
        page.wait_text(spool, lambda text: text == "accepting", "the spool of default")
        self.assertEqual(page.text(field_of("default", "spool-accepts")),
                         "/send stores lines (202, spooled)")
        self.assertEqual(page.text(state_of("default")), "disconnected")
        self.assertEqual(page.text(field_of("default", "spool-records")), "0 records")
        self.assertEqual(page.text(field_of("default", "spool-oldest")), NOTHING)
        # No spool, nothing shown.
        self.assertTrue(page.visible(field_of("default", "spool")))
        self.assertFalse(page.visible(field_of("direct", "spool")))
        self.assertEqual(page.text(state_of("direct")), "disconnected")

        # Try it: /send to the spool while the upstream is down, answered as it came.
        page.select("#try-upstream", "default")
        page.fill("#try-body", "SET page-spooled from-the-spool")
        page.click('#try-form input[value="send"]')
        page.click("#try-submit")
        page.wait_text("#try-status", lambda text: text.startswith("202"), "202")
        self.assertEqual(page.text("#try-answer"), '{"sent": 1, "spooled": true}')
        self.assertEqual(page.text("#try-target"), "POST /send")
        page.wait_text(field_of("default", "spool-records"), lambda text: text == "1 record",
                       "1 record waiting")
        self.assertRegex(page.text(field_of("default", "spool-oldest")), r"^\d+s$")
        on_disk = status_of(url, "default")["spool"]["bytes"]
        self.assertGreater(on_disk, 0)
        self.assertEqual(page.text(field_of("default", "spool-bytes")),
                         f"{on_disk} B of 1.0 GiB")
        self.assertEqual([page.text(field_of("default", f"spool-{name}"))
                          for name in ("retired", "redelivered", "set-aside")], ["0", "0", "0"])
        # Without a spool, /send still needs the upstream.
        page.select("#try-upstream", "direct")
        page.click("#try-submit")
        page.wait_text("#try-target", lambda text: text == "POST /u/direct/send", "direct")
        page.wait_text("#try-status", lambda text: text.startswith("503"), "503")
        self.assertEqual(json.loads(page.text("#try-answer"))["error"], "upstream_unavailable")

        # A full spool: tiny (1 MiB) takes 100 kB bodies until it answers 429
        # (full: less room left than the largest request, a tenth of it).
        body = (b"SET page-tiny " + b"x" * 1000 + b"\n") * 100
        answers = [call(url + "/u/tiny/send", body)[0] for _ in range(12)]
        self.assertEqual(answers[:9], [202] * 9)
        self.assertIn(429, answers)
        page.wait_text(field_of("tiny", "spool-state"), lambda text: text == "full",
                       "the spool of tiny full")
        self.assertEqual(page.text(field_of("tiny", "spool-accepts")),
                         "/send answers 429 spool_full")
        tiny = status_of(url, "tiny")["spool"]
        self.assertEqual(page.text(field_of("tiny", "spool-bytes")),
                         f"{tiny['bytes'] / 1024:.1f} KiB of 1.0 MiB")
        self.assertEqual(page.text(field_of("tiny", "spool-records")), f"{tiny['records']} records")
        self.screenshot()

        # The upstream starts: the record is delivered and retired.
        self.redis.start()
        page.wait_text(field_of("default", "spool-retired"), lambda text: text == "1",
                       "1 retired")
        page.wait_text(field_of("default", "spool-records"), lambda text: text == "0 records",
                       "0 records waiting")
        self.assertEqual(page.text(field_of("default", "spool-oldest")), NOTHING)
        self.assertEqual(page.text(state_of("default")), "connected")
        self.assertEqual(redis_get(self.redis.port, "page-spooled"),
                         b"$14\r\nfrom-the-spool\r\n")

        requests = page.requests_of(url)
        self.assertEqual([r.url for r in requests if not r.url.startswith(url + "/")], [],
                         "requests outside the bridge's origin")
        # The one console error: Chromium's own line for the 503 asked for above.
        self.assertEqual([entry["message"] for entry in page.errors()],
                         [f"{url}/u/direct/send - Failed to load resource: the server "
                          "responded with a status of 503 (Service Unavailable)"])

    def screenshot(self) -> None:
        """A screenshot of the upstreams' cards (always taken; written next to
        BRIDGE_UI_SCREENSHOT's file, ``-spool`` added to its name, when set)."""
        assert self.browser is not None
        directory = tempfile.mkdtemp(prefix="bridge-screenshot-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "spool.png")
        self.browser.element_screenshot("#upstreams", path)
        with open(path, "rb") as handle:
            self.assertEqual(handle.read(8), b"\x89PNG\r\n\x1a\n")
        target = os.environ.get("BRIDGE_UI_SCREENSHOT")
        if target:
            stem, extension = os.path.splitext(target)
            shrink_png(path, os.path.join(REPO, stem + "-spool" + extension))


def shrink_png(source: str, target: str) -> None:
    """Copy the screenshot, reduced to a 64-colour palette if Pillow is there."""
    try:
        from PIL import Image
    except ImportError:
        shutil.copyfile(source, target)
        return
    image: Any = Image.open(source).convert("RGB")
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(
        target, optimize=True)
