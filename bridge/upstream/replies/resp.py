"""The ``resp`` framing: Redis replies (RESP2 and RESP3) to inline commands.

The decoder is incremental like hiredis' reader: it keeps the aggregates
still open on a stack and parses each element (a line, or a header and its
data block) only once it is complete, so a large reply that arrives in many
pieces costs no more than one that arrives whole.  The buffer is a
``bytearray`` consumed from the front (``del buf[:n]`` is cheap in CPython).

Values follow the JSON rules of the API: strings are text, integers and big
numbers ints, doubles floats (but ``inf``, ``-inf`` and ``nan`` strings, which
JSON has no numbers for), nulls None, maps dicts with string keys, errors
``{"error": text}``.  A RESP3 attribute (``|``) is metadata about the value
after it: the frame is that value, the attribute only in ``raw``.  A push
(``>``) is never a reply.

How many replies a request expects is decided by :mod:`.inline`, which
reads the lines the way Redis' inline parser does.
"""

from __future__ import annotations

import json
import re
from types import MappingProxyType
from typing import Any, Sequence

from bridge.upstream.replies.frames import Frame, FramingError, Plan
from bridge.upstream.replies.inline import plan_inline
from bridge.upstream.replies.limits import Limits, shown

MAX_DEPTH = 64

_CR = 13
_LF = 10
_SIMPLE = ord("+")
_ERROR = ord("-")
_INTEGER = ord(":")
_BULK = ord("$")
_ARRAY = ord("*")
_NULL = ord("_")
_BOOLEAN = ord("#")
_DOUBLE = ord(",")
_BIG_NUMBER = ord("(")
_BLOB_ERROR = ord("!")
_VERBATIM = ord("=")
_MAP = ord("%")
_SET = ord("~")
_ATTRIBUTE = ord("|")
_PUSH = ord(">")

_BLOBS = frozenset((_BULK, _BLOB_ERROR, _VERBATIM))
_AGGREGATES = frozenset((_ARRAY, _MAP, _SET, _ATTRIBUTE, _PUSH))
_PAIRED = frozenset((_MAP, _ATTRIBUTE))
#: Types whose length may be -1 (a RESP2 null, or RESP3 written the same way).
_NULLABLE = frozenset((_BULK, _BLOB_ERROR, _VERBATIM, _ARRAY, _MAP, _SET))
_DECIMAL = re.compile(rb"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_SPECIAL_DOUBLES = MappingProxyType({b"inf": "inf", b"-inf": "-inf", b"nan": "nan"})


class _Discarded:
    """What a finished attribute turns into: nothing its parent counts."""


_DISCARDED = _Discarded()


class RespDecoder:
    """Frames RESP2/RESP3 replies; raises FramingError for anything else."""

    __slots__ = ("_buf", "_limits", "_pos", "_scanned", "_stack", "_start", "_top")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._start = 0  # where the frame being parsed starts
        self._scanned = 0  # bytes known to hold no LF after _pos
        self._pos = 0  # where the next element starts
        #: open aggregates, outermost first: [type, elements still due, items]
        self._stack: list[list[Any]] = []
        self._top = 0  # type of the frame's outermost element (attribute aside)

    def feed(self, data: bytes) -> None:
        if self._start:
            del self._buf[: self._start]
            self._pos -= self._start
            self._scanned -= self._start
            self._start = 0
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf) - self._start

    def gets(self, awaited: bool = True) -> Frame | None:
        buf = self._buf
        stack = self._stack
        limits = self._limits
        while True:
            pos = self._pos
            # Resume the search for LF where the last one gave up: a long
            # line trickling in is scanned once, not once per piece.
            newline = buf.find(b"\n", max(pos, self._scanned))
            if newline < 0:
                self._scanned = len(buf)
                if len(buf) - pos > limits.max_line_bytes + 1:
                    raise limits.line_too_long(len(buf) - pos)
                self._check_size(len(buf))
                return None
            stop = newline - 1 if newline > pos and buf[newline - 1] == _CR else newline
            if stop - pos > limits.max_line_bytes:
                raise limits.line_too_long(stop - pos)
            kind = buf[pos]
            after = newline + 1
            text = bytes(buf[pos + 1 : stop])
            value: Any
            if kind == _SIMPLE:
                value = text.decode("utf-8", "replace")
            elif kind == _BULK or kind == _BLOB_ERROR or kind == _VERBATIM:
                length = _length(kind, text)
                if length < 0:
                    value = None
                    text = b""
                else:
                    if length > limits.max_line_bytes:
                        raise limits.block_too_long("bulk string", length)
                    end = after + length
                    if end + 2 > len(buf):
                        self._check_size(end + 2)
                        return None
                    if buf[end] != _CR or buf[end + 1] != _LF:
                        raise FramingError(
                            f"a bulk string of {length} bytes is not followed by CRLF"
                        )
                    text = bytes(buf[after:end])
                    after = end + 2
                    if kind == _BULK:
                        value = text.decode("utf-8", "replace")
                    elif kind == _BLOB_ERROR:
                        value = {"error": text.decode("utf-8", "replace")}
                    else:
                        if text[3:4] != b":":
                            raise FramingError(
                                f"a verbatim string does not start with its format: "
                                f"{shown(text)}"
                            )
                        text = text[4:]
                        value = text.decode("utf-8", "replace")
            elif kind == _INTEGER:
                value = _integer(text)
            elif kind == _ERROR:
                value = {"error": text.decode("utf-8", "replace")}
            elif kind in _AGGREGATES:
                count = _length(kind, text)
                if count > 0:
                    if len(stack) >= MAX_DEPTH:
                        raise FramingError(f"a reply nests aggregates deeper than {MAX_DEPTH}")
                    if not stack:
                        self._top = kind
                    stack.append([kind, count * 2 if kind in _PAIRED else count, []])
                    self._pos = after
                    continue
                if count < 0:
                    value = None
                    text = b""
                elif kind == _ATTRIBUTE:
                    value = _DISCARDED
                else:
                    value = {} if kind == _MAP else []
            elif kind == _NULL:
                if text:
                    raise _malformed("null", text)
                value = None
            elif kind == _BOOLEAN:
                if text == b"t":
                    value = True
                elif text == b"f":
                    value = False
                else:
                    raise _malformed("boolean", text)
            elif kind == _DOUBLE:
                value = _double(text)
            elif kind == _BIG_NUMBER:
                value = _integer(text, "big number")
            else:
                raise FramingError(
                    f"received {shown(bytes(buf[pos:stop]))}: {chr(kind)!r} is not a RESP type"
                )
            self._pos = after
            if not stack:
                if value is _DISCARDED:
                    continue
                return self._frame(after, kind, value, text)
            if after - self._start > limits.max_reply_bytes:
                raise limits.reply_too_long(after - self._start)
            while value is not _DISCARDED:
                top = stack[-1]
                top[2].append(value)
                top[1] -= 1
                if top[1]:
                    break
                stack.pop()
                value = _finish(top[0], top[2])
                if not stack:
                    if value is _DISCARDED:
                        break
                    return self._frame(after, self._top, value, b"")

    def _frame(self, end: int, kind: int, value: Any, text: bytes) -> Frame:
        start = self._start
        if end - start > self._limits.max_reply_bytes:
            raise self._limits.reply_too_long(end - start)
        self._start = end
        raw = bytes(self._buf[start:end])
        if kind in _AGGREGATES:
            if value is None:
                return Frame(raw, None, b"", json_events=True)
            return Frame(raw, value, raw, push=kind == _PUSH, json_events=True)
        error = (kind == _ERROR or kind == _BLOB_ERROR) and value is not None
        return Frame(raw, value, text, error=error, json_events=True)

    def _check_size(self, at_least: int) -> None:
        if at_least - self._start > self._limits.max_reply_bytes:
            raise self._limits.reply_too_long(at_least - self._start)


def _finish(kind: int, items: list[Any]) -> Any:
    if kind == _MAP:
        return {
            key if isinstance(key, str) else json.dumps(key): value
            for key, value in zip(items[::2], items[1::2], strict=True)
        }
    if kind == _ATTRIBUTE:
        return _DISCARDED
    return items


def _length(kind: int, text: bytes) -> int:
    """The length or count of a blob or aggregate header (-1: null)."""
    if text.isdigit():
        return int(text)
    if text == b"-1" and kind in _NULLABLE:
        return -1
    if text == b"?":
        raise FramingError("received a streamed RESP3 string or aggregate; it is not supported")
    raise _malformed(f"length of {chr(kind)!r}", text)


def _integer(text: bytes, what: str = "integer") -> int | str:
    if text.isdigit() or (text[:1] == b"-" and text[1:].isdigit()):
        try:
            return int(text)
        except ValueError:  # beyond Python's digit limit: keep the digits
            return text.decode("ascii")
    raise _malformed(what, text)


def _double(text: bytes) -> float | str:
    special = _SPECIAL_DOUBLES.get(text.lower())
    if special is not None:
        return special
    if _DECIMAL.fullmatch(text):
        value = float(text)
        if value - value == 0.0:  # finite
            return value
    raise _malformed("double", text)


def _malformed(what: str, text: bytes) -> FramingError:
    return FramingError(f"received a malformed RESP {what}: {shown(text)}")


class RespFraming:
    """Redis: replies counted the way Redis reads inline commands."""

    name = "resp"
    counts_known = True
    default_send_replies = "check"

    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    def decoder(self) -> RespDecoder:
        return RespDecoder(self._limits)

    def plan(self, lines: Sequence[bytes]) -> Plan:
        return plan_inline(lines)
