"""--log-format json and --log-level (bridge.logs.make_observer), and the
access log through the served site: probes are never in it."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bridge.logs import make_observer
from tests.http_harness import TOKEN, HarnessTestCase, auth, chunked

# 2023-11-14T22:13:20.250+00:00
WHEN = 1700000000.25
WHEN_TEXT = "2023-11-14T22:13:20.250+00:00"


def event(level: LogLevel, log_format: str, namespace: str = "bridge.test",
          **fields: Any) -> dict[str, Any]:
    """An event as twisted.logger.Logger.emit builds it."""
    return {"log_format": log_format, "log_level": level, "log_namespace": namespace,
            "log_time": WHEN, "log_source": None, "log_logger": None, **fields}


class JSONTests(SynchronousTestCase):
    def write(self, events: list[dict[str, Any]], level: str = "info") -> list[Any]:
        stream = io.StringIO()
        observer = make_observer(stream, level, "json")
        for one in events:
            observer(one)
        text = stream.getvalue()
        self.assertTrue(text == "" or text.endswith("\n"))
        return [json.loads(line) for line in text.splitlines()]

    def test_one_object_per_line(self) -> None:
        lines = self.write([
            event(LogLevel.info, "upstream {member}: connected to {address}",
                  "bridge.upstream.UpstreamMember", member="0", address="localhost:6379"),
            event(LogLevel.warn, "waiting {count} s", count=2.5),
        ])
        self.assertEqual(lines, [
            {"time": WHEN_TEXT, "level": "info", "namespace": "bridge.upstream.UpstreamMember",
             "event": "upstream 0: connected to localhost:6379", "member": "0",
             "address": "localhost:6379"},
            {"time": WHEN_TEXT, "level": "warn", "namespace": "bridge.test",
             "event": "waiting 2.5 s", "count": 2.5},
        ])

    def test_field_types(self) -> None:
        (line,) = self.write([
            event(LogLevel.error, "odd {line!r}", line=b"\x00\r\n", flag=True, none=None,
                  number=3, items=[1, 2]),
        ])
        self.assertEqual(line, {
            "time": WHEN_TEXT, "level": "error", "namespace": "bridge.test",
            "event": "odd b'\\x00\\r\\n'", "line": "b'\\x00\\r\\n'", "flag": True,
            "none": None, "number": 3, "items": "[1, 2]",
        })

    def test_newlines_stay_inside_one_line(self) -> None:
        stream = io.StringIO()
        make_observer(stream, "info", "json")(
            event(LogLevel.info, "a {text}", text="line one\nline two\r\n\u00e9")
        )
        self.assertEqual(stream.getvalue().count("\n"), 1)
        self.assertEqual(json.loads(stream.getvalue())["event"],
                         "a line one\nline two\r\n\u00e9")

    def test_failure_has_its_traceback(self) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            failure = Failure()
        (line,) = self.write([
            event(LogLevel.critical, "unhandled error answering {path}", path=b"/send",
                  log_failure=failure),
        ])
        self.assertEqual(
            {key: line[key] for key in ("level", "event", "path")},
            {"level": "critical", "event": "unhandled error answering b'/send'",
             "path": "b'/send'"},
        )
        self.assertIn("ValueError: boom", line["traceback"])
        self.assertIn("Traceback", line["traceback"])

    def test_through_a_logger(self) -> None:
        stream = io.StringIO()
        log = Logger(namespace="bridge.x", observer=make_observer(stream, "info", "json"))
        log.info("hello {who}", who="you")
        log.debug("not shown")
        (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
        self.assertEqual(
            {key: line[key] for key in ("level", "namespace", "event", "who")},
            {"level": "info", "namespace": "bridge.x", "event": "hello you", "who": "you"},
        )
        self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")

    def test_level_filtering(self) -> None:
        events = [event(level, level.name) for level in
                  (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error,
                   LogLevel.critical)]
        shown = {level: [line["event"] for line in self.write(events, level)]
                 for level in ("debug", "info", "warn", "error")}
        self.assertEqual(shown, {
            "debug": ["debug", "info", "warn", "error", "critical"],
            "info": ["info", "warn", "error", "critical"],
            "warn": ["warn", "error", "critical"],
            "error": ["error", "critical"],
        })

    def test_twisted_noise_is_quiet_unless_debug(self) -> None:
        events = [
            event(LogLevel.info, "Starting factory", "twisted.internet.protocol"),
            event(LogLevel.info, "connecting", "twisted.application._client_service"),
            event(LogLevel.warn, "trouble", "twisted.internet.protocol"),
            event(LogLevel.info, "ours", "bridge.upstream.member"),
        ]
        self.assertEqual([line["event"] for line in self.write(events, "info")],
                         ["trouble", "ours"])
        self.assertEqual([line["event"] for line in self.write(events, "debug")],
                         ["Starting factory", "connecting", "trouble", "ours"])

    def test_text_format(self) -> None:
        stream = io.StringIO()
        observer = make_observer(stream, "info", "text")
        observer(event(LogLevel.info, "upstream {member}: ready", member="0"))
        observer(event(LogLevel.debug, "hidden"))
        text = stream.getvalue()
        self.assertEqual(text.count("\n"), 1)
        self.assertTrue(text.endswith("[bridge.test#info] upstream 0: ready\n"), text)
        self.assertRaises(ValueError, json.loads, text)


class AccessLogTests(HarnessTestCase):
    def access(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The access log, as the JSON observer writes it."""
        stream = io.StringIO()
        observer = make_observer(stream, "info", "json")
        for one in events:
            if one.get("log_namespace") == "bridge.access":
                observer(one)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        for line in lines:
            self.assertEqual((line["level"], line["namespace"]), ("info", "bridge.access"))
            del line["time"], line["level"], line["namespace"]
        return lines

    def test_probes_are_not_logged(self) -> None:
        events = self.capture_logs()
        harness = self.harness(token=TOKEN, connect=0, access_log=True)
        for path in ("/healthz", "/readyz", "/metrics", "/healthz?x=1", "/readyz?full"):
            harness.call("GET", path)
            harness.call("GET", path, headers=auth())
        client = harness.client()
        client.send(chunked("POST", "/metrics", b"x"))  # 401, with a chunked body
        self.assertEqual(harness.call("GET", "/readyz").status, 503)  # failing probes too
        self.assertEqual(self.access(events), [])

    def test_other_requests_are_logged(self) -> None:
        events = self.capture_logs()
        harness = self.harness(token=TOKEN, access_log=True)
        sent = harness.call("POST", "/send", b"a\n", auth())
        refused = harness.call("POST", "/send?x=1", b"a\n")
        status = harness.call("GET", "/status", headers=auth())
        client = harness.client()
        client.send(chunked("POST", "/send", b"b\n"))
        waiting = harness.start("POST", "/request", b"c\n", auth())
        harness.upstream.peer_sends(b"C\n")
        self.assertEqual(waiting.response().status, 200)
        self.assertEqual(self.access(events), [
            {"event": f'10.9.8.7 "POST /send" 202 {len(sent.body)}', "client": "10.9.8.7",
             "method": "POST", "path": "/send", "code": 202, "length": len(sent.body)},
            {"event": f'10.9.8.7 "POST /send?x=1" 401 {len(refused.body)}',
             "client": "10.9.8.7", "method": "POST", "path": "/send?x=1", "code": 401,
             "length": len(refused.body)},
            {"event": f'10.9.8.7 "GET /status" 200 {len(status.body)}', "client": "10.9.8.7",
             "method": "GET", "path": "/status", "code": 200, "length": len(status.body)},
            {"event": f'10.9.8.7 "POST /send" 401 {len(refused.body)}', "client": "10.9.8.7",
             "method": "POST", "path": "/send", "code": 401, "length": len(refused.body)},
            {"event": '10.9.8.7 "POST /request" 200 18', "client": "10.9.8.7",
             "method": "POST", "path": "/request", "code": 200, "length": 18},
        ])

    def test_access_log_off(self) -> None:
        events = self.capture_logs()
        harness = self.harness(access_log=False)
        harness.call("POST", "/send", b"a\n")
        harness.call("GET", "/status")
        self.assertEqual(self.access(events), [])
        self.assertEqual(harness.service.http_counts["requests"], 2)
