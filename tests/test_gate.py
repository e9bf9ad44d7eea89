"""Bearer token, max_inflight, and the listen/token configuration rules."""

from __future__ import annotations

import os
import tempfile

from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from bridge.config import ConfigError, load
from tests.http_harness import (
    TOKEN,
    HarnessTestCase,
    Response,
    auth,
    chunked,
    http_request,
)

# -- the token ----------------------------------------------------------------------


UNAUTHORIZED = {
    "error": "unauthorized",
    "message": "this route needs 'Authorization: Bearer <token>'",
}

#: Every route behind the token, with a request that would otherwise succeed.
GUARDED = [
    ("POST", "/send", b"PING\n"),
    ("POST", "/request", b"PING\n"),
    ("GET", "/status", None),
    ("GET", "/metrics", None),
    ("GET", "/events", None),
    ("GET", "/nope", None),
    ("GET", "/openapi.json", None),
    ("POST", "/healthz/x", b"a\n"),
]

BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Token {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": f"Bearer{TOKEN}"},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer s3cre"},
    {"Authorization": "Bearer s"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN} {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN.upper()}"},
    {"X-Token": TOKEN},
]


class TokenTests(HarnessTestCase):
    def assertUnauthorized(self, response: Response) -> None:
        self.assertJSONResponse(response, 401, UNAUTHORIZED)
        self.assertEqual(response.headers[b"www-authenticate"], [b'Bearer realm="bridge"'])
        self.assertNotIn(TOKEN.encode(), response.body)

    def test_every_guarded_route_refuses_bad_credentials(self) -> None:
        harness = self.harness(token=TOKEN)
        for method, path, body in GUARDED:
            for headers in BAD_CREDENTIALS:
                with self.subTest(method=method, path=path, headers=headers):
                    self.assertUnauthorized(harness.call(method, path, body, headers))
        # The same with a chunked body.
        for path in ("/send", "/request"):
            for headers in BAD_CREDENTIALS:
                with self.subTest(path=path, headers=headers, lane="twisted.web"):
                    client = harness.client()
                    head = http_request("POST", path, None,
                                        {**headers, "Transfer-Encoding": "chunked"})
                    client.send(head + b"5\r\nPING\n\r\n0\r\n\r\n")
                    self.assertUnauthorized(client.response())
        self.assertEqual(harness.upstream.value(), b"")
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_probes_need_no_token(self) -> None:
        harness = self.harness(token=TOKEN)
        self.assertJSONResponse(harness.call("GET", "/healthz"), 200, {"status": "ok"})
        self.assertJSONResponse(
            harness.call("GET", "/readyz", headers={"Authorization": "Bearer wrong"}), 200,
            {"ready": True, "state": "connected", "connected": 1, "pool_size": 1},
        )

    def test_right_token_passes(self) -> None:
        harness = self.harness(token=TOKEN)
        self.assertJSONResponse(
            harness.call("POST", "/send", b"SET a 1\n", auth()), 202, {"sent": 1}
        )
        self.assertEqual(harness.upstream.value(), b"SET a 1\r\n")
        waiting = harness.start("POST", "/request", b"GET a\n", auth())
        self.assertEqual(harness.upstream.value(), b"SET a 1\r\nGET a\r\n")
        harness.upstream.peer_sends(b"1\r\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["1"]})
        status = harness.call("GET", "/status", headers=auth())
        self.assertEqual((status.status, status.json()["counters"]["lines_sent"]), (200, 2))
        missing = harness.call("GET", "/nope", headers=auth())
        self.assertJSONResponse(missing, 404, {"error": "not_found", "message": "no route /nope"})

    def test_scheme_is_case_insensitive(self) -> None:
        harness = self.harness(token=TOKEN)
        for scheme in ("bearer", "BEARER", "Bearer"):
            response = harness.call("POST", "/send", b"x\n",
                                    {"Authorization": f"{scheme} {TOKEN}"})
            self.assertJSONResponse(response, 202, {"sent": 1})

    def test_without_a_token_nothing_is_asked(self) -> None:
        harness = self.harness()
        self.assertJSONResponse(harness.call("POST", "/send", b"x\n"), 202, {"sent": 1})
        self.assertEqual(harness.call("GET", "/metrics").status, 200)
        self.assertEqual(harness.call("GET", "/status").status, 200)

    def test_metrics_needs_the_token_when_metrics_auth(self) -> None:
        harness = self.harness(token=TOKEN)
        self.assertUnauthorized(harness.call("GET", "/metrics"))
        response = harness.call("GET", "/metrics", headers=auth())
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header(b"Content-Type"),
                         b"text/plain; version=0.0.4; charset=utf-8")

    def test_metrics_open_without_metrics_auth(self) -> None:
        harness = self.harness(token=TOKEN, metrics_auth=False)
        response = harness.call("GET", "/metrics")
        self.assertEqual(response.status, 200)
        self.assertIn(b"bridge_http_inflight_requests 0.0\n", response.body)
        # Only /metrics is opened: the rest keeps its token.
        self.assertUnauthorized(harness.call("GET", "/status"))
        self.assertUnauthorized(harness.call("POST", "/send", b"x\n"))

    def test_refused_requests_are_not_counted_in_flight(self) -> None:
        harness = self.harness(token=TOKEN, max_inflight=1)
        for _ in range(3):
            self.assertUnauthorized(harness.call("POST", "/request", b"x\n"))
        waiting = harness.start("POST", "/request", b"x\n", auth())
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        harness.upstream.peer_sends(b"ok\n")
        self.assertJSONResponse(waiting.response(), 200, {"replies": ["ok"]})
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_the_token_never_leaks(self) -> None:
        """Not in answers, /status, /metrics, nor any log event, whatever is tried."""
        events = self.capture_logs()
        harness = self.harness(token=TOKEN, access_log=True)
        bodies: list[bytes] = []
        for method, path, body in GUARDED:
            for headers in BAD_CREDENTIALS:
                bodies.append(harness.call(method, path, body, headers).body)
        for path in ("/status", "/metrics", "/nope"):
            bodies.append(harness.call("GET", path, headers=auth()).body)
        bodies.append(harness.call("POST", "/send", b"\r", auth()).body)  # 400
        bodies.append(harness.call("DELETE", "/send", b"x", auth()).body)  # 405
        waiting = harness.start("POST", "/request?timeout=1", b"x\n", auth())
        harness.reactor.advance(1)  # 504
        bodies.append(waiting.response().body)
        status = harness.call("GET", "/status", headers=auth())
        self.assertEqual(status.status, 200)
        bodies.append(status.body)
        for body in bodies:
            self.assertNotIn(TOKEN.encode(), body)
        harness.close_everything()
        access = [formatEvent(e) for e in events if e.get("log_namespace") == "bridge.access"]
        self.assertIn('10.9.8.7 "POST /send" 401 ' + str(len(bodies[0])), access)
        self.assertIn('10.9.8.7 "POST /request?timeout=1" 504 ' + str(len(bodies[-2])), access)
        for event in events:
            text = formatEvent(event) + repr(event)
            self.assertNotIn(TOKEN, text, event)


class ConfigTokenTests(SynchronousTestCase):
    def write(self, content: bytes) -> str:
        descriptor, path = tempfile.mkstemp(prefix="bridge-token-")
        os.write(descriptor, content)
        os.close(descriptor)
        self.addCleanup(os.unlink, path)
        return path

    def test_token_file_is_read_and_stripped(self) -> None:
        path = self.write(b"  s3cret \n\n")
        config = load({"token_file": path}, {})
        self.assertEqual((config.token, config.token_file), ("s3cret", path))
        self.assertNotIn("s3cret", repr(config))

    def test_token_file_from_the_environment(self) -> None:
        path = self.write(b"s3cret\n")
        self.assertEqual(load({}, {"BRIDGE_TOKEN_FILE": path}).token, "s3cret")

    def test_token_wins_over_token_file(self) -> None:
        path = self.write(b"from-file\n")
        config = load({"token_file": path}, {"BRIDGE_TOKEN": "from-env"})
        self.assertEqual(config.token, "from-env")

    def test_empty_token_file(self) -> None:
        for content in (b"", b"\n", b"  \t\r\n"):
            path = self.write(content)
            with self.subTest(content=content):
                error = self.assertRaises(ConfigError, load, {"token_file": path}, {})
                self.assertEqual(error.setting, "token_file")
                self.assertEqual(str(error), f"setting 'token_file': {path} is empty")

    def test_unreadable_token_file(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        missing = os.path.join(directory, "absent")
        error = self.assertRaises(ConfigError, load, {"token_file": missing}, {})
        self.assertEqual(
            str(error), f"setting 'token_file': cannot read {missing}: No such file or directory"
        )
        error = self.assertRaises(ConfigError, load, {"token_file": directory}, {})
        self.assertEqual(error.setting, "token_file")
        self.assertTrue(str(error).startswith(f"setting 'token_file': cannot read {directory}: "))

    def test_token_file_not_utf8(self) -> None:
        path = self.write(b"\xff\xfe\n")
        error = self.assertRaises(ConfigError, load, {"token_file": path}, {})
        self.assertEqual(error.setting, "token_file")

    def test_public_listen_needs_a_token(self) -> None:
        for listen in ("0.0.0.0:8080", ":8080", "10.0.0.1:80", "tcp:8080", "[::]:8080"):
            with self.subTest(listen=listen):
                error = self.assertRaises(ConfigError, load, {"listen": listen}, {})
                self.assertEqual(error.setting, "listen")
                self.assertIn("is not a loopback address and no token is set", str(error))
                self.assertIn("--allow-public", str(error))

    def test_public_listen_with_allow_public(self) -> None:
        config = load({"listen": "0.0.0.0:8080", "allow_public": True}, {})
        self.assertEqual((config.listen, config.token), ("0.0.0.0:8080", None))
        config = load({"listen": "0.0.0.0:8080"}, {"BRIDGE_ALLOW_PUBLIC": "true"})
        self.assertTrue(config.allow_public)

    def test_public_listen_with_a_token(self) -> None:
        config = load({"listen": "0.0.0.0:8080"}, {"BRIDGE_TOKEN": TOKEN})
        self.assertEqual((config.listen, config.token), ("0.0.0.0:8080", TOKEN))
        path = self.write(b"s3cret\n")
        self.assertEqual(load({"listen": "0.0.0.0:8080", "token_file": path}, {}).token, TOKEN)

    def test_loopback_listen_needs_no_token(self) -> None:
        for listen in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "8080",
                       "unix:/tmp/bridge.sock"):
            with self.subTest(listen=listen):
                self.assertEqual(load({"listen": listen}, {}).listen, listen)

    def test_blank_token(self) -> None:
        error = self.assertRaises(ConfigError, load, {}, {"BRIDGE_TOKEN": "   "})
        self.assertEqual(error.setting, "token")
        self.assertNotIn("   ", error.problem)


# -- max_inflight ---------------------------------------------------------------------


OVERLOADED = {
    "error": "overloaded",
    "message": "2 requests are being handled (max_inflight); retry later",
}


class OverloadTests(HarnessTestCase):
    def assertOverloaded(self, response: Response) -> None:
        self.assertJSONResponse(response, 429, OVERLOADED)
        self.assertEqual(response.headers[b"retry-after"], [b"1"])

    def test_beyond_max_inflight(self) -> None:
        harness = self.harness(max_inflight=2)
        first = harness.start("POST", "/request", b"GET a\n")
        second = harness.client()
        second.send(chunked("POST", "/request", b"GET b\n"))
        self.assertEqual(harness.service.lifecycle.inflight, 2)
        self.assertOverloaded(harness.call("POST", "/send", b"SET c 3\n"))
        self.assertOverloaded(harness.call("POST", "/request", b"GET c\n"))
        third = harness.client()
        third.send(chunked("POST", "/send", b"SET d 4\n"))
        self.assertOverloaded(third.response())
        self.assertEqual(harness.upstream.value(), b"GET a\r\nGET b\r\n")
        # Only work is limited: probes and /status are still answered.
        self.assertEqual(harness.call("GET", "/healthz").status, 200)
        self.assertEqual(harness.call("GET", "/readyz").status, 200)
        self.assertEqual(harness.call("GET", "/status").json()["inflight"], 2)
        # A reply finishes one: the next is admitted.
        harness.upstream.peer_sends(b"A\r\n")
        self.assertJSONResponse(first.response(), 200, {"replies": ["A"]})
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        self.assertJSONResponse(harness.call("POST", "/send", b"SET c 3\n"), 202, {"sent": 1})
        fourth = harness.start("POST", "/request", b"GET c\n")
        self.assertOverloaded(harness.call("POST", "/send", b"SET e 5\n"))
        harness.upstream.peer_sends(b"B\r\nC\r\n")
        self.assertJSONResponse(second.response(), 200, {"replies": ["B"]})
        self.assertJSONResponse(fourth.response(), 200, {"replies": ["C"]})
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        self.assertEqual(harness.upstream.value(),
                         b"GET a\r\nGET b\r\nSET c 3\r\nGET c\r\n")

    def test_max_inflight_one(self) -> None:
        harness = self.harness(max_inflight=1)
        waiting = harness.start("POST", "/request", b"x\n")
        response = harness.call("POST", "/send", b"y\n")
        self.assertJSONResponse(response, 429, {
            "error": "overloaded",
            "message": "1 requests are being handled (max_inflight); retry later",
        })
        harness.upstream.peer_sends(b"ok\n")
        self.assertEqual(waiting.response().status, 200)
        self.assertEqual(harness.call("POST", "/send", b"y\n").status, 202)

    def test_answered_sends_do_not_hold_a_place(self) -> None:
        harness = self.harness(max_inflight=1)
        for number in range(5):
            response = harness.call("POST", "/send", b"line %d\n" % number)
            self.assertJSONResponse(response, 202, {"sent": 1})
        client = harness.client()
        for number in range(3):  # keep-alive: one connection, one after the other
            client.send(chunked("POST", "/send", b"more %d\n" % number))
        self.assertEqual([r.status for r in client.responses()], [202, 202, 202])
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_cancelled_requests_give_their_place_back(self) -> None:
        harness = self.harness(max_inflight=2)
        first = harness.start("POST", "/request", b"GET a\n")
        second = harness.client()
        second.send(chunked("POST", "/request", b"GET b\n"))
        self.assertEqual(harness.service.lifecycle.inflight, 2)
        first.disconnect()
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        second.disconnect()
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        self.assertEqual(harness.call("POST", "/send", b"x\n").status, 202)
        # The late replies go to the abandoned slots, not to new requests
        # (line framing takes no new request until they came).
        harness.upstream.peer_sends(b"A\r\nB\r\n")
        third = harness.start("POST", "/request", b"GET c\n")
        harness.upstream.peer_sends(b"C\r\n")
        self.assertJSONResponse(third.response(), 200, {"replies": ["C"]})
        self.assertEqual(harness.service.lifecycle.inflight, 0)

    def test_errors_give_their_place_back(self) -> None:
        harness = self.harness(max_inflight=2, reply_timeout=1)
        # Rejected bodies and bad parameters.
        self.assertEqual(harness.call("POST", "/send", b"").status, 400)
        self.assertEqual(harness.call("POST", "/request", b"a\rb").status, 400)
        self.assertEqual(harness.call("POST", "/request?timeout=x", b"a\n").status, 400)
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        # Reply timeout (504).
        late = harness.start("POST", "/request", b"slow\n")
        self.assertEqual(harness.service.lifecycle.inflight, 1)
        harness.reactor.advance(1)
        self.assertEqual(late.response().status, 504)
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        harness.upstream.peer_sends(b"late\r\n")
        # Connection lost (502), on both lanes.
        lost = harness.start("POST", "/request", b"x\n")
        other = harness.client()
        other.send(chunked("POST", "/request", b"y\n"))
        self.assertEqual(harness.service.lifecycle.inflight, 2)
        harness.upstream.peer_closes()
        self.assertEqual((lost.response().status, other.response().status), (502, 502))
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        # Not connected (503).
        self.assertEqual(harness.call("POST", "/send", b"x\n").status, 503)
        self.assertEqual(harness.call("POST", "/request", b"x\n").status, 503)
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        harness.reactor.advance(2)  # reconnect due
        harness.connect_upstream()
        # Two places are free again.
        waiting = [harness.start("POST", "/request", b"x\n") for _ in range(2)]
        self.assertEqual(harness.service.lifecycle.inflight, 2)
        harness.upstream.peer_sends(b"1\n2\n")
        self.assertEqual([w.response().status for w in waiting], [200, 200])
