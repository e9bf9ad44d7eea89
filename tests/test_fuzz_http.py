"""Fuzzing the HTTP side with hypothesis: random bodies, content types,
transfer framings and lying lengths, fed as raw bytes (in random pieces) to
the bridge's real served site.  An independent implementation of the body
rules below says what must happen; the test checks the status, the error
code, and the exact bytes that reach the upstream (none for a rejected
request)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.test_gate import Client, Harness, Response, parse_responses

MAX_LINE = 16
MAX_BODY = 256
TIMEOUT = 30.0

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- the body rules, written from the API contract -------------------------------------


@dataclass(frozen=True)
class Expected:
    status: int
    error: str | None = None
    lines: tuple[bytes, ...] = ()


def is_json(content_type: str | None) -> bool:
    """The media type (parameters and case aside) is application/json."""
    if content_type is None:
        return False
    return content_type.split(";")[0].strip().lower() == "application/json"


def text_rules(body: bytes) -> Expected:
    """Split on LF; a CR right before an LF goes; one final LF ends the last
    line; any other CR is refused; lines are at most MAX_LINE bytes."""
    if body == b"":
        return Expected(400, "empty_body")
    *ended, last = body.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in ended]
    if last != b"":
        lines.append(last)
    if any(b"\r" in line for line in lines):
        return Expected(400, "bare_cr")
    if any(len(line) > MAX_LINE for line in lines):
        return Expected(413, "line_too_long")
    return Expected(202, None, tuple(lines))


def json_rules(body: bytes) -> Expected:
    """{"lines": [str, ...]}: strings without CR or LF, sent as UTF-8."""
    if body == b"":
        return Expected(400, "empty_body")
    try:
        document = json.loads(body.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        return Expected(400, "invalid_json")
    if not isinstance(document, dict) or not isinstance(document.get("lines"), list):
        return Expected(400, "invalid_lines")
    items = document["lines"]
    if not items:
        return Expected(400, "empty_body")
    lines = []
    for item in items:
        if not isinstance(item, str) or "\r" in item or "\n" in item:
            return Expected(400, "invalid_lines")
        try:
            lines.append(item.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate, from a \ud800 escape
            return Expected(400, "invalid_lines")
    if any(len(line) > MAX_LINE for line in lines):
        return Expected(413, "line_too_long")
    return Expected(202, None, tuple(lines))


def rules(body: bytes, content_type: str | None) -> Expected:
    if len(body) > MAX_BODY:
        return Expected(413, "body_too_large")
    return json_rules(body) if is_json(content_type) else text_rules(body)


# -- strategies -----------------------------------------------------------------------------

PIECES = st.one_of(
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\r", b"\x00", b"", b" ", b"a", b"SET k v",
                     b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b"\t", b"{", b'"lines"']),
    st.binary(max_size=8),
    st.integers(min_value=MAX_LINE - 2, max_value=MAX_LINE + 2).map(lambda n: b"x" * n),
)
LINE_BYTES = st.one_of(
    st.binary(max_size=MAX_LINE).filter(lambda line: b"\n" not in line and b"\r" not in line),
    st.sampled_from([b"", b"PING", b"SET a 1", b"\x00", "\u00e9t\u00e9".encode(), b"\xff\xfe"]),
)
#: Bodies built line by line, with every kind of line end, often valid.
LINED_BODIES = st.lists(
    st.tuples(LINE_BYTES, st.sampled_from([b"\n", b"\n", b"\r\n", b"\r\n", b"\r", b""])),
    min_size=1, max_size=8,
).map(lambda parts: b"".join(line + end for line, end in parts))
TEXT_BODIES = st.one_of(
    st.lists(PIECES, max_size=16).map(b"".join),
    LINED_BODIES,
    st.binary(min_size=MAX_BODY - 8, max_size=MAX_BODY + 8),
)

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=8))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
LINE_CHARACTERS = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["\r", "\n", "\x00", "\u2028", "\u00e9", "\U0001f600"]),
    st.characters(categories=["Cs"]),  # lone surrogates
)
LINE_ITEMS = st.one_of(
    st.text(LINE_CHARACTERS, max_size=MAX_LINE + 4),
    st.text(st.characters(codec="ascii"), min_size=MAX_LINE - 1, max_size=MAX_LINE + 1),
    JSON_SCALARS,
)
GOOD_ITEMS = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"),
                     max_size=MAX_LINE // 4)
#: One item that breaks a rule (or just fits), to put among good ones.
ODD_ITEMS: st.SearchStrategy[Any] = st.sampled_from([
    "\n", "a\nb", "\r", "a\r\nb", "\u2028", "\x00", "\ud800", "a\udfff", 1, 1.5, None, True,
    [], ["a"], {}, "x" * MAX_LINE, "x" * (MAX_LINE + 1), "\u00e9" * (MAX_LINE // 2),
    "\u00e9" * (MAX_LINE // 2) + "x", "",
])


@st.composite
def almost_good_lines(draw: Any) -> list[Any]:
    items = draw(st.lists(GOOD_ITEMS, max_size=4))
    at = draw(st.integers(min_value=0, max_value=len(items)))
    return [*items[:at], draw(ODD_ITEMS), *items[at:]]


GOOD_DOCUMENTS = st.fixed_dictionaries({"lines": st.lists(GOOD_ITEMS, min_size=1, max_size=6)})
DOCUMENTS = st.one_of(
    GOOD_DOCUMENTS,
    GOOD_DOCUMENTS,
    st.fixed_dictionaries({"lines": almost_good_lines()}),
    st.fixed_dictionaries({"lines": st.lists(LINE_ITEMS, max_size=6)},
                          optional={"other": JSON_VALUES}),
    st.fixed_dictionaries({"lines": JSON_VALUES}),
    JSON_VALUES,
)
INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]


@st.composite
def json_bodies(draw: Any) -> bytes:
    document = draw(DOCUMENTS)
    body = json.dumps(document, ensure_ascii=draw(st.booleans())).encode(
        "utf-8", "surrogatepass"
    )
    mutation = draw(st.sampled_from(["none"] * 5 + ["invalid_utf8", "truncate", "append"]))
    if mutation == "invalid_utf8" and b'"' in body:
        at = body.index(b'"') + 1  # inside the first string
        body = body[:at] + draw(st.sampled_from(INVALID_UTF8)) + body[at:]
    elif mutation == "truncate":
        body = body[: draw(st.integers(min_value=0, max_value=len(body)))]
    elif mutation == "append":
        body += draw(st.sampled_from([b"\n", b" ", b"x", b"}", b"\x00", b"\r\n"]))
    return body


JSON_TYPES = ["application/json", "application/json; charset=utf-8", "Application/JSON",
              "application/json ; x=y", "APPLICATION/json;charset=latin-1"]
OTHER_TYPES = [None, "", "text/plain", "text/plain; charset=utf-8", "application/jsonx",
               "application/json-seq", "text/json", "application/x-www-form-urlencoded",
               "multipart/form-data; boundary=zz", "application/octet-stream",
               "application/ld+json"]
CONTENT_TYPES = st.sampled_from(JSON_TYPES + OTHER_TYPES)
#: (body, Content-Type): mostly matched, sometimes not.
REQUESTS = st.one_of(
    st.tuples(TEXT_BODIES, st.sampled_from(OTHER_TYPES)),
    st.tuples(json_bodies(), st.sampled_from(JSON_TYPES)),
    st.tuples(st.one_of(TEXT_BODIES, json_bodies()), CONTENT_TYPES),
)
#: Headers that change how the request is read (and which lane serves it).
EXTRA_HEADERS = st.sampled_from([
    {}, {}, {"Connection": "close"}, {"Expect": "100-continue"}, {"Accept": "text/plain"},
    {"X-Forwarded-For": "1.2.3.4"}, {"Connection": "keep-alive"},
])


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: bridge.test"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def frame(path: str, body: bytes, content_type: str | None, chunked: bool,
          extra: dict[str, str], chunk_size: int = 7) -> bytes:
    headers = dict(extra)
    if content_type is not None:
        headers["Content-Type"] = content_type
    if not chunked:
        headers["Content-Length"] = str(len(body))
        return head(path, headers) + body
    headers["Transfer-Encoding"] = "chunked"
    chunks = b"".join(
        b"%x\r\n" % len(body[i:i + chunk_size]) + body[i:i + chunk_size] + b"\r\n"
        for i in range(0, len(body), chunk_size)
    )
    return head(path, headers) + chunks + b"0\r\n\r\n"


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- the tests --------------------------------------------------------------------------------


class FuzzTests(SynchronousTestCase):
    def bridge(self, **values: Any) -> Harness:
        harness = Harness.create(max_line_bytes=MAX_LINE, max_body_bytes=MAX_BODY,
                                 request_timeout=TIMEOUT, reply_timeout=5, **values)
        harness.connect_upstream()
        return harness

    def done(self, harness: Harness) -> None:
        self.assertEqual(harness.service.lifecycle.inflight, 0)
        harness.close_everything()
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def answers(self, client: Client) -> list[Response]:
        """Final answers so far; a connection the bridge closed is then gone,
        as a socket would be once its last bytes are sent."""
        responses, _ = parse_responses(client.transport.value())
        if client.closing:
            client.disconnect()
        return [response for response in responses if response.status >= 200]

    def check(self, harness: Harness, client: Client, path: str, expected: Expected,
              delimiter: bytes, plain_text: bool = False) -> None:
        """The one answer, and the exact bytes the upstream got."""
        upstream = harness.upstream
        if expected.status == 202 and path == "/request":
            framed = b"".join(line + delimiter for line in expected.lines)
            self.assertEqual(upstream.value(), framed)
            self.assertEqual(self.answers(client), [])
            replies = [f"r{i}" for i in range(len(expected.lines))]
            upstream.peer_sends(b"".join(r.encode() + b"\r\n" for r in replies))
            (response,) = self.answers(client)
            if plain_text:
                self.assertEqual(
                    (response.status, response.header(b"Content-Type"), response.body),
                    (200, b"text/plain; charset=utf-8",
                     "".join(r + "\r\n" for r in replies).encode()),  # as received
                )
            else:
                self.assertEqual((response.status, response.json()),
                                 (200, {"replies": replies}))
            return
        (response,) = self.answers(client)
        if expected.status == 202:
            self.assertEqual((response.status, response.json()),
                             (202, {"sent": len(expected.lines)}))
            self.assertEqual(upstream.value(),
                             b"".join(line + delimiter for line in expected.lines))
        else:
            self.assertEqual((response.status, response.json()["error"]),
                             (expected.status, expected.error), response.body)
            self.assertEqual(upstream.value(), b"")

    @FUZZ
    @example(request=(b'{"lines": ["a"], "\xed\xa0\x80": 1}', "application/json"),
             chunked=False, chunk_size=1, extra={}, path="/send", delimiter="crlf", cuts=[])
    @example(request=('{"lines": ["a"]}'.encode("utf-16"), "application/json"),
             chunked=False, chunk_size=1, extra={}, path="/send", delimiter="crlf", cuts=[])
    @example(request=(b"\xef\xbb\xbf{}", "application/json"),
             chunked=True, chunk_size=1, extra={}, path="/send", delimiter="crlf", cuts=[])
    @example(request=(b"x" * MAX_BODY, None), chunked=False, chunk_size=1, extra={},
             path="/send", delimiter="crlf", cuts=[])
    @example(request=(b"x" * (MAX_BODY + 1), None), chunked=True, chunk_size=100,
             extra={}, path="/send", delimiter="crlf", cuts=[])
    @example(request=(b"x" * (MAX_BODY + 1), None), chunked=False, chunk_size=1,
             extra={}, path="/send", delimiter="crlf", cuts=[])
    @example(request=(b"\n", None), chunked=False, chunk_size=1, extra={},
             path="/request", delimiter="lf", cuts=[])
    @example(request=(b"a\r\r\nb", "text/plain"), chunked=False, chunk_size=1,
             extra={}, path="/send", delimiter="crlf", cuts=[])
    @example(request=(b"GET a\r\n\r\nSET b\r", None), chunked=True, chunk_size=3,
             extra={"Expect": "100-continue"}, path="/send", delimiter="crlf", cuts=[5, 60])
    @given(
        request=REQUESTS,
        chunked=st.booleans(),
        chunk_size=st.integers(min_value=1, max_value=300),
        extra=EXTRA_HEADERS,
        path=st.sampled_from(["/send", "/request", "/send?x=1"]),
        delimiter=st.sampled_from(["crlf", "lf"]),
        cuts=st.lists(st.integers(min_value=0), max_size=6),
    )
    def test_bodies(self, request: tuple[bytes, str | None], chunked: bool,
                    chunk_size: int, extra: dict[str, str], path: str, delimiter: str,
                    cuts: list[int]) -> None:
        body, content_type = request
        harness = self.bridge(delimiter=delimiter)
        client = harness.client()
        for piece in pieces(frame(path, body, content_type, chunked, extra, chunk_size), cuts):
            client.send(piece)
        expected = rules(body, content_type)
        kind = "json" if is_json(content_type) else "text"
        event(f"{expected.status} {expected.error or ''} ({kind})")
        self.check(harness, client, path.partition("?")[0], expected,
                   harness.config.delimiter_bytes, extra.get("Accept") == "text/plain")
        self.done(harness)

    @FUZZ
    @given(
        body=TEXT_BODIES,
        content_type=CONTENT_TYPES,
        lie=st.one_of(st.integers(min_value=-300, max_value=-1),
                      st.integers(min_value=1, max_value=300)),
        then=st.sampled_from([b"", b"\r\n", b"POST /send HTTP/1.1\r\n"]),
        cuts=st.lists(st.integers(min_value=0), max_size=4),
    )
    def test_lying_content_length(self, body: bytes, content_type: str | None, lie: int,
                                  then: bytes, cuts: list[int]) -> None:
        declared = max(0, len(body) + lie)
        harness = self.bridge()
        client = harness.client()
        headers = {"Content-Length": str(declared)}
        if content_type is not None:
            headers["Content-Type"] = content_type
        for piece in pieces(head("/send", headers) + body + then, cuts):
            client.send(piece)
        upstream = harness.upstream
        event("too large" if declared > MAX_BODY else "short" if declared < len(body)
              else "long")
        if declared > MAX_BODY:
            (response,) = self.answers(client)
            self.assertEqual((response.status, response.json()["error"]),
                             (413, "body_too_large"))
            self.assertEqual(upstream.value(), b"")
        elif declared > len(body) + len(then):
            # The body never completes: nothing happens until the deadline.
            self.assertEqual(self.answers(client), [])
            harness.reactor.advance(TIMEOUT)
            (response,) = self.answers(client)
            self.assertEqual((response.status, response.json()["error"]),
                             (408, "request_timeout"))
            self.assertEqual(upstream.value(), b"")
        else:
            # The first `declared` bytes are the body; the rest is read as what
            # follows it on the connection, which is never a valid request.
            expected = rules((body + then)[:declared], content_type)
            self.check_first(self.answers(client)[0], expected)
            harness.reactor.advance(TIMEOUT)
            rest = self.answers(client)[1:]
            self.assertLessEqual(len(rest), 1)
            for response in rest:
                self.assertIn(response.status, (400, 408))
            self.assertEqual(upstream.value(),
                             b"".join(line + b"\r\n" for line in expected.lines))
        self.done(harness)

    def check_first(self, response: Response, expected: Expected) -> None:
        if expected.status == 202:
            self.assertEqual((response.status, response.json()),
                             (202, {"sent": len(expected.lines)}))
        else:
            self.assertEqual((response.status, response.json()["error"]),
                             (expected.status, expected.error), response.body)

    @FUZZ
    @given(
        value=st.one_of(
            st.sampled_from(["-1", "+2", "0x2", "2, 2", "1_0", "\uff12", "2 2", "", "1e1",
                             "99999999999999999999999"]),
            st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=6),
        ),
        body=st.sampled_from([b"a\n", b"", b"0123456789\n"]),
    )
    def test_content_length_values(self, value: str, body: bytes) -> None:
        harness = self.bridge()
        client = harness.client()
        client.send(head("/send", {"Content-Length": value}) + body)
        text = value.strip(" \t")
        if text.isdigit() and text.isascii():
            declared = int(text)
            expected = (rules(body[:declared], None) if declared <= len(body)
                        else Expected(408, "request_timeout"))
            if declared > MAX_BODY:
                expected = Expected(413, "body_too_large")
            harness.reactor.advance(TIMEOUT)
            first = self.answers(client)[0]
            self.check_first(first, expected)
            self.assertEqual(harness.upstream.value(),
                             b"".join(line + b"\r\n" for line in expected.lines))
        else:
            (response,) = self.answers(client)
            self.assertEqual(response.status, 400)
            self.assertEqual(harness.upstream.value(), b"")
        self.done(harness)

    @FUZZ
    @given(extra=st.lists(
        st.sampled_from([
            ("Content-Length", "2"), ("Content-Length", "3"), ("Transfer-Encoding", "chunked"),
            ("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "identity"),
            ("Content-Type", "application/json"), ("Content-Type", "text/plain"),
            ("Expect", "100-continue"), ("Connection", "close"), (" Content-Length", "2"),
            ("Content-Length ", "2"), ("X", "y\x00"),
        ]),
        max_size=4,
    ))
    def test_odd_header_sets(self, extra: list[tuple[str, str]]) -> None:
        """Whatever the framing headers say, the answer is a 2xx/4xx and the
        upstream gets either nothing or exactly the body's lines."""
        harness = self.bridge()
        client = harness.client()
        lines = [b"POST /send HTTP/1.1", b"Host: b"]
        lines += [f"{name}: {value}".encode("latin-1") for name, value in extra]
        client.send(b"\r\n".join(lines) + b"\r\n\r\n" + b"a\n")
        harness.reactor.advance(TIMEOUT)
        answers = self.answers(client)
        self.assertTrue(answers)
        for response in answers:
            self.assertIn(response.status, (202, 400, 408, 411, 413, 501))
        self.assertIn(harness.upstream.value(), (b"", b"a\r\n"))
        if harness.upstream.value():
            self.assertEqual(answers[0].status, 202)
        self.done(harness)
