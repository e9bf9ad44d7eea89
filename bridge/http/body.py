"""HTTP request bodies to upstream lines, and lines to bytes on the wire.

The rules are all-or-nothing: a body is either turned into lines completely,
or rejected with a :class:`BodyError` and nothing of it is sent.
"""

from __future__ import annotations

import json

from bridge.errors import BodyError
from bridge.http.limits import media_type
from bridge.upstream.lines import Lines

_LF = b"\n"
_CR = b"\r"
_CRLF = b"\r\n"



def is_json(content_type: bytes | None) -> bool:
    # The substring test first: it is all most requests (text/plain) need.
    return (content_type is not None and b"json" in content_type.lower()
            and media_type(content_type) == b"application/json")


def parse_text(body: bytes, max_line_bytes: int, delimiter: bytes) -> Lines:
    """Split a text body on LF (a CR right before LF is dropped)."""
    if not body:
        raise BodyError(400, "empty_body", "the request body is empty; send at least one line")
    if _CR in body:
        if body.count(_CR) != body.count(_CRLF):
            raise BodyError(
                400,
                "bare_cr",
                "the body contains a CR that is not followed by LF; lines end with LF or CRLF",
            )
        if delimiter == _CRLF and body.count(_LF) == body.count(_CRLF):
            # Already framed as we would frame it: write it as it is.
            return _framed(body, body.endswith(_CRLF), max_line_bytes, _CRLF)
        body = body.replace(_CRLF, _LF)
    return _framed(body, body.endswith(_LF), max_line_bytes, delimiter, _LF)


def _framed(
    body: bytes, terminated: bool, max_line_bytes: int, delimiter: bytes,
    separator: bytes | None = None,
) -> Lines:
    """Lines of ``body`` (split on ``separator``, default ``delimiter``), each
    followed by ``delimiter``; ``terminated`` when the body already ends with a
    separator (which ends the last line and adds no empty one).  Copies the
    body at most once: this is the hot path of bulk /send."""
    separator = separator or delimiter
    count = body.count(separator) + (0 if terminated else 1)
    if len(body) > max_line_bytes:
        content = body[: -len(separator)] if terminated else body
        _check_lengths(content.split(separator), max_line_bytes)
    if separator != delimiter:
        body = body.replace(separator, delimiter)
    return Lines(count, body if terminated else body + delimiter)


def _check_lengths(lines: list[bytes], max_line_bytes: int) -> None:
    for number, line in enumerate(lines, 1):
        if len(line) > max_line_bytes:
            raise BodyError(
                413,
                "line_too_long",
                f"line {number} is {len(line)} bytes; the limit is {max_line_bytes}",
            )


def parse_json(body: bytes, max_line_bytes: int, delimiter: bytes) -> Lines:
    """Read ``{"lines": ["...", ...]}``."""
    if not body:
        raise BodyError(400, "empty_body", "the request body is empty; send {\"lines\": [...]}")
    try:
        # Strict UTF-8 (RFC 8259): json.loads(bytes) would also take UTF-16/32
        # and UTF-8-encoded lone surrogates ("surrogatepass").
        document = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise BodyError(400, "invalid_json", f"the body is not valid JSON: {error}") from None
    except RecursionError:  # e.g. 100000 nested arrays: not a 500
        raise BodyError(400, "invalid_json", "the body's JSON is nested too deeply") from None
    if not isinstance(document, dict) or "lines" not in document:
        raise BodyError(400, "invalid_lines", 'the JSON body must be an object with "lines"')
    items = document["lines"]
    if not isinstance(items, list):
        raise BodyError(400, "invalid_lines", '"lines" must be a list of strings')
    if not items:
        raise BodyError(400, "empty_body", '"lines" is empty; send at least one line')
    encoded: list[bytes] = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise BodyError(400, "invalid_lines", f'"lines"[{index}] is not a string')
        if "\r" in item or "\n" in item:
            raise BodyError(400, "invalid_lines", f'"lines"[{index}] contains CR or LF')
        try:
            encoded.append(item.encode("utf-8"))
        except UnicodeEncodeError:
            raise BodyError(
                400, "invalid_lines", f'"lines"[{index}] is not valid Unicode text'
            ) from None
    _check_lengths(encoded, max_line_bytes)
    return Lines(len(encoded), delimiter.join(encoded) + delimiter)


def parse_body(
    body: bytes, content_type: bytes | None, max_line_bytes: int, delimiter: bytes
) -> Lines:
    """Apply the body rules of ``POST /send`` and ``POST /request``."""
    if is_json(content_type):
        return parse_json(body, max_line_bytes, delimiter)
    return parse_text(body, max_line_bytes, delimiter)
