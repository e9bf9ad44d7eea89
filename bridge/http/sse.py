"""The ``text/event-stream`` wire format and the ids the bridge gives events.

Kept apart from the hub so that the exact bytes a client sees are decided in
one small place and can be tested without any connection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CONNECTED = b": connected\n\n"
KEEPALIVE = b": keep-alive\n\n"

_BOOT = re.compile(r"[0-9A-Za-z_]{1,32}")
_MAX_SEQUENCE_DIGITS = 19


def escape(line: str) -> str:
    """``\\`` becomes ``\\\\``, CR ``\\r`` and LF ``\\n``.

    An EventSource ends a field at CR, LF or CRLF: a raw one would end the
    ``data:`` line early and let the rest pose as fields of its own (an
    ``id:``, an ``event:``, a whole forged event).  Escaping the backslash too
    keeps the escape reversible: a literal ``\\r`` stays distinguishable from
    an escaped CR.
    """
    return line.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def format_event(
    kind: str, event_id: str | None, lines: Sequence[str], json_lines: bool = False
) -> bytes:
    """One event: ``event:``, ``id:`` (if any), one ``data:`` field per line.

    EventSource joins the data fields with LF, so splitting an event's data
    on LF gives back exactly the lines published, each escaped by
    :func:`escape`, or, with ``json_lines``, as they are: JSON text never holds
    a raw CR or LF (it would be a bug upstream of here, and is then escaped
    all the same).  An event with no lines is sent with one empty line:
    EventSource does not dispatch an event without a ``data:`` field.
    """
    if not kind or "\r" in kind or "\n" in kind:
        raise ValueError(f"an event kind must be one non-empty line, got {kind!r}")
    parts = [f"event: {kind}\n"]
    if event_id is not None:
        parts.append(f"id: {event_id}\n")
    for line in lines or ("",):
        if not json_lines or "\r" in line or "\n" in line:
            line = escape(line)
        parts.append(f"data: {line}\n")
    parts.append("\n")
    # "replace": a lone surrogate in a line must not break the whole stream.
    return "".join(parts).encode("utf-8", "replace")


def check_boot(boot: str) -> str:
    """A process's boot token: 1 to 32 letters, digits or ``_`` (no ``-``,
    which separates it from the sequence number in an id)."""
    if not _BOOT.fullmatch(boot):
        raise ValueError(f"a boot token is 1 to 32 letters, digits or _, got {boot!r}")
    return boot


def event_id(boot: str, sequence: int) -> str:
    """``<boot>-<sequence>``: unique across restarts because the boot token
    is chosen anew by every process, so a client's Last-Event-ID from an
    earlier run is never mistaken for one of this run."""
    return f"{boot}-{sequence}"


def parse_event_id(text: str) -> tuple[str, int] | None:
    """``(boot, sequence)`` of an id made by :func:`event_id`, else None."""
    boot, dash, number = text.rpartition("-")
    if not dash or not _BOOT.fullmatch(boot):
        return None
    if not (number.isascii() and number.isdigit()) or len(number) > _MAX_SEQUENCE_DIGITS:
        return None
    return boot, int(number)
