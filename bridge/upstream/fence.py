"""Fences: a line written after a request so that its replies end visibly.

With ``fence_line`` and ``fence_expect`` set, every request that awaits
replies is followed on the wire by the fence line; the request's replies are
exactly the frames that arrive before the fence's reply.  ``{nonce}`` in the
line is replaced by a fresh token per request, and ``{nonce}`` in the regex
matches it, so that a fence reply belonging to another request is recognised
as such: the connection is then out of step.
"""

from __future__ import annotations

import re
import secrets
from typing import Callable

from bridge.upstream.replies.frames import Frame

PLACEHOLDER = "{nonce}"

OWN = "own"  # the fence reply of the request at the head of the queue
OTHER = "other"  # a fence reply with another nonce
NONE = "none"  # not a fence reply


#: What a nonce looks like; distinctive, so that an ordinary reply is not
#: mistaken for another request's fence reply.
NONCE_PATTERN = "fence-[0-9a-f]{16}"


def fresh_nonce() -> str:
    return "fence-" + secrets.token_hex(8)


class Fence:
    """The configured fence of one upstream."""

    def __init__(
        self,
        line: str,
        expect: str,
        delimiter: bytes,
        nonce: Callable[[], str] = fresh_nonce,
        nonce_pattern: str = NONCE_PATTERN,
    ) -> None:
        self._line = line
        self._delimiter = delimiter
        self._nonce = nonce
        self._checks_nonce = PLACEHOLDER in expect
        escaped = expect.replace(PLACEHOLDER, f"(?P<nonce>{nonce_pattern})", 1)
        escaped = escaped.replace(PLACEHOLDER, "(?P=nonce)")
        self._pattern = re.compile(escaped.encode("utf-8"))

    def next(self) -> tuple[str, bytes]:
        """A fresh nonce and the fence line carrying it, delimiter included."""
        nonce = self._nonce()
        return nonce, self._line.replace(PLACEHOLDER, nonce).encode("utf-8") + self._delimiter

    def match(self, frame: Frame, nonce: str) -> str:
        """Whether ``frame`` is the fence reply for ``nonce`` (OWN), another
        request's (OTHER), or no fence reply at all (NONE)."""
        found = self._pattern.search(frame.text)
        if found is None:
            return NONE
        if not self._checks_nonce or found.group("nonce") == nonce.encode("ascii"):
            return OWN
        return OTHER
