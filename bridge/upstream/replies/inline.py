"""How many replies Redis sends to inline commands, read the way Redis reads them.

Redis (src/networking.c, ``processInlineBuffer``) splits each line with
``sdssplitargs`` (src/sds.c): arguments are separated by blanks, may be
quoted with ``"..."`` (C escapes, ``\\xHH``) or ``'...'``, and a closing
quote must be followed by a blank or the end of the line.  Checked against
redis-server 7.0 (see tests/test_replies_real_servers.py):

* a line with no argument (empty, or only blanks: space, tab, VT, FF) gets
  no reply at all; ``""`` is one (empty) argument and gets an error reply;
* unbalanced quotes get an error reply and the connection is closed;
* a line starting with ``*`` is read as a RESP multibulk request;
* a line holding a NUL byte is never answered: Redis looks for the line's end
  with ``strchr``, which stops at the NUL, and waits for more bytes;
* ``POST`` and ``Host:`` commands close the connection without a reply
  (Redis' guard against HTTP requests sent to it);
* a line of 64 KiB or more may be refused as "too big inline request", and
  the connection closed, depending on how the bytes arrive.

Commands that stop the one-reply-per-command rhythm are refused too:
subscriptions (their messages are events, see ``events_subscribe``),
``MONITOR``, replication (``SYNC``, ``PSYNC``) and ``CLIENT REPLY OFF|SKIP``.
Every other line gets exactly one reply (``MULTI`` answers ``+OK``, each
queued command ``+QUEUED``, ``EXEC`` one array).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Sequence

from bridge.errors import BodyError
from bridge.upstream.replies.frames import Plan
from bridge.upstream.replies.limits import shown

#: Redis' PROTO_INLINE_MAX_SIZE
INLINE_MAX = 64 * 1024

_BLANKS = frozenset(b" \t\n\v\f\r")  # isspace() in the C locale
_TOKEN_ENDS = frozenset(b" \n\r\t\0")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = MappingProxyType(
    {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
)
#: Bytes that make a line worth splitting the slow, exact way.
_SPECIAL = re.compile(rb"[\"'\x0b\x0c\x00]")

_SUBSCRIPTIONS = frozenset(
    b"SUBSCRIBE PSUBSCRIBE SSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE SUNSUBSCRIBE".split()
)
_REPLICATION = frozenset((b"SYNC", b"PSYNC"))
_HTTP_GUARD = frozenset((b"POST", b"HOST:"))

#: A request whose text (each line preceded by LF) holds none of these, and
#: whose lowered text none of the command starts, is one reply per line: most
#: bulk traffic is planned by a few C-level substring searches instead of a
#: Python loop.  They find more than they need to (then every line is looked
#: at): a line starting with a blank, an empty line, quotes anywhere.
_SUSPECT_BYTES = (b"\n*", b"\n\n", b"\n ", b"\n\t", b"\n\x0b", b"\n\x0c", b"\n\r", b'"', b"'",
                  b"\0")
_SUSPECT_STARTS = tuple(b"\n" + word.lower() for word in (
    *_SUBSCRIPTIONS, *_REPLICATION, *_HTTP_GUARD, b"MONITOR", b"CLIENT",
))


def split_args(line: bytes) -> list[bytes] | None:
    """``sdssplitargs``: the arguments of a line, or None for unbalanced quotes."""
    if _SPECIAL.search(line) is None:
        # Without quotes, VT, FF or NUL, bytes.split() splits exactly the same.
        return line.split()
    return _split_exactly(line)


def _split_exactly(line: bytes) -> list[bytes] | None:
    end = len(line)

    def at(index: int) -> int:  # C string semantics: a NUL ends it
        return line[index] if index < end else 0

    args: list[bytes] = []
    p = 0
    while True:
        while at(p) and at(p) in _BLANKS:
            p += 1
        if not at(p):
            return args
        current = bytearray()
        in_double = in_single = done = False
        while not done:
            c = at(p)
            if in_double:
                if c == 0x5C and at(p + 1) == 0x78 and at(p + 2) in _HEX and at(p + 3) in _HEX:
                    current.append(int(line[p + 2 : p + 4], 16))
                    p += 3
                elif c == 0x5C and at(p + 1):
                    p += 1
                    current.append(_ESCAPES.get(line[p], line[p]))
                elif c == 0x22:
                    if at(p + 1) and at(p + 1) not in _BLANKS:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif in_single:
                if c == 0x5C and at(p + 1) == 0x27:
                    p += 1
                    current.append(0x27)
                elif c == 0x27:
                    if at(p + 1) and at(p + 1) not in _BLANKS:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif c in _TOKEN_ENDS:
                done = True
            elif c == 0x22:
                in_double = True
            elif c == 0x27:
                in_single = True
            else:
                current.append(c)
            if at(p):
                p += 1
        args.append(bytes(current))


def plan_inline(lines: Sequence[bytes]) -> Plan:
    """The replies Redis sends to ``lines``; BodyError for lines it would
    misread or that break the one-reply-per-command rhythm."""
    if max(map(len, lines), default=0) < INLINE_MAX:
        text = b"\n" + b"\n".join(lines)
        if not text.endswith(b"\n") and not any(suspect in text for suspect in _SUSPECT_BYTES):
            lowered = text.lower()
            if not any(start in lowered for start in _SUSPECT_STARTS):
                return Plan(len(lines))
    answered: list[int] = []
    for number, line in enumerate(lines, 1):
        if _replies(number, line):
            answered.append(number)
    if len(answered) == len(lines):
        return Plan(len(answered))
    return Plan(len(answered), answered)


def _replies(number: int, line: bytes) -> int:
    """0 or 1: the replies to one line; raises BodyError for a refused line."""
    if b"\0" in line:
        raise _refused(number, "holds a NUL byte: Redis would never see the end of the line")
    if line[:1] == b"*":
        raise _refused(
            number,
            "starts with '*': Redis would read it as a RESP multibulk request, not an "
            "inline command",
        )
    if len(line) >= INLINE_MAX:
        raise _refused(
            number,
            f"is {len(line)} bytes: Redis may refuse an inline command of 64 KiB or more "
            "and close the connection",
        )
    args = split_args(line)
    if args is None:
        raise _refused(
            number,
            f"has unbalanced quotes ({shown(line)}): Redis answers an error and closes the "
            "connection",
        )
    if not args:
        return 0
    name = args[0].upper()
    if name in _SUBSCRIPTIONS:
        raise _refused(
            number,
            f"is {args[0].decode('ascii', 'replace')}: after it the connection delivers "
            "pub/sub messages instead of one reply per command; subscribe through the "
            "events_subscribe setting and read them from /events",
        )
    if name == b"MONITOR":
        raise _refused(
            number,
            "is MONITOR: after it the connection streams every command the server runs "
            "instead of one reply per command",
        )
    if name in _REPLICATION:
        raise _refused(
            number,
            f"is {args[0].decode('ascii', 'replace')}: it turns the connection into a "
            "replication stream",
        )
    if name in _HTTP_GUARD:
        raise _refused(
            number,
            f"is {args[0].decode('ascii', 'replace')}: Redis takes it for an HTTP request "
            "sent to it by mistake and closes the connection without a reply",
        )
    if (
        name == b"CLIENT"
        and len(args) == 3
        and args[1].upper() == b"REPLY"
        and args[2].upper() in (b"OFF", b"SKIP")
    ):
        raise _refused(
            number,
            f"is CLIENT REPLY {args[2].upper().decode()}: the commands after it would not "
            "be answered, so replies could not be matched to commands",
        )
    return 1


def _refused(number: int, why: str) -> BodyError:
    return BodyError(400, "invalid_command", f"line {number} {why}")
