"""Reply framings: one decoder and one planner per upstream protocol (see frames).

:func:`make_framing` is the one place that turns the ``reply_framing``
setting into a :class:`~bridge.upstream.replies.frames.Framing`.
"""

from __future__ import annotations

import re

from bridge.upstream.replies.frames import Framing
from bridge.upstream.replies.limits import Limits
from bridge.upstream.replies.line import LineFraming
from bridge.upstream.replies.memcached import MemcachedFraming
from bridge.upstream.replies.resp import RespFraming
from bridge.upstream.replies.status import StatusFraming
from bridge.upstream.replies.terminator import TerminatorFraming

#: The names ``make_framing`` knows, in the order the documentation lists them.
FRAMING_NAMES = ("line", "resp", "memcached", "status", "terminator")


def make_framing(
    name: str,
    *,
    max_line_bytes: int,
    max_reply_bytes: int,
    terminator: str | None = None,
) -> Framing:
    """The framing called ``name``.

    ``terminator`` (a regular expression, searched in each line's bytes
    without its delimiter) is required by the ``terminator`` framing and
    refused by the others, so that a setting that does nothing is noticed.
    Raises ValueError for an unknown name, a missing or invalid terminator.
    """
    limits = Limits(max_line_bytes, max_reply_bytes)
    if name == "terminator":
        if terminator is None:
            raise ValueError("the terminator framing needs a terminator regex")
        try:
            pattern = re.compile(terminator.encode("utf-8"))
        except re.error as error:
            raise ValueError(f"the terminator is not a valid regex: {error}") from None
        return TerminatorFraming(limits, pattern)
    if terminator is not None:
        raise ValueError(f"a terminator is only used by the terminator framing, not {name!r}")
    if name == "line":
        return LineFraming(limits)
    if name == "resp":
        return RespFraming(limits)
    if name == "memcached":
        return MemcachedFraming(limits)
    if name == "status":
        return StatusFraming(limits)
    raise ValueError(f"unknown reply framing {name!r}; known: {', '.join(FRAMING_NAMES)}")
