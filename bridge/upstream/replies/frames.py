"""What every reply framing shares: frames, decoders, command plans.

A *framing* (one per upstream: ``line``, ``resp``, ``memcached``, ``status``,
``terminator``) has two halves:

* a :class:`Decoder`, fed the bytes of one connection as they arrive, that
  yields complete :class:`Frame` s (one reply, or one unsolicited message), in
  the style of hiredis' ``Reader`` (``feed(bytes)`` / ``gets()``);
* a planner, :meth:`Framing.plan`, that reads the lines of one request
  before anything is written and says how many replies they expect (and which
  line each reply answers), or refuses lines the upstream would misread with a
  :class:`~bridge.errors.BodyError` (400): nothing of a refused request is sent.

Bytes a decoder cannot frame raise :class:`FramingError`: the connection is
out of step and is closed by its protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence
from typing import Protocol as TypingProtocol


class FramingError(Exception):
    """The upstream sent bytes its framing cannot parse: out of step."""


@dataclass(slots=True)
class Frame:
    """One complete reply (or unsolicited message) from the upstream.

    ``raw`` is every byte of it exactly as received, delimiters included
    (``Accept: text/plain`` answers with the raw bytes of the replies).
    ``value`` is what the JSON answer shows: a ``str`` for ``line``; a list of
    ``str`` (one per line) for ``memcached``, ``status`` and ``terminator``;
    any JSON value for ``resp``.  ``text`` is what regexes see
    (``reply_error_pattern``, ``fence_expect``, ``handshake_expect``,
    ``heartbeat_expect``, ``greeting_expect``).  ``error`` marks an error reply
    by the framing's own rules; ``push`` a message that is never a reply
    (RESP3 push).
    """

    raw: bytes
    value: Any
    text: bytes
    error: bool = False
    push: bool = False
    #: Show ``value`` as JSON in events too (RESP); otherwise a ``str`` value
    #: is one ``data:`` line and a list of ``str`` one ``data:`` line each.
    json_events: bool = False

    def event_lines(self) -> list[str]:
        """The ``data:`` lines of this frame as a Server-Sent Event."""
        value = self.value
        if not self.json_events:
            if isinstance(value, str):
                return [value]
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                return list(value) or [""]
        return [json.dumps(value, ensure_ascii=False)]


class Decoder(TypingProtocol):
    """Incremental decoder for one connection."""

    def feed(self, data: bytes) -> None:
        """Buffer bytes received from the upstream."""

    def gets(self, awaited: bool = True) -> Frame | None:
        """The next complete frame, or None until more bytes arrive.

        ``awaited`` says whether a reply is awaited now; a framing that
        cannot tell where an unsolicited message ends (``terminator``) uses it
        to deliver each line that arrives while nothing is awaited on its own.
        Raises :class:`FramingError` when the bytes cannot be framed.
        """
        ...

    def buffered(self) -> int:
        """Bytes received and not yet returned in a frame."""
        ...


#: A check a reply must pass, or the connection is out of step (for example
#: SMTP ``DATA`` must be answered 354: otherwise the message lines written
#: after it would be read as commands).
Acceptance = Callable[[Frame], bool]


@dataclass(frozen=True)
class Plan:
    """How a request's lines are answered in one framing.

    ``replies`` is the number of replies the lines expect.  ``lines`` gives,
    for each expected reply, the 1-based number of the line it answers; None
    means reply *i* answers line *i* (``replies`` equals the line count).
    ``accept`` maps a reply's 0-based index to a check it must pass.
    """

    replies: int
    lines: Sequence[int] | None = None
    accept: Mapping[int, Acceptance] = field(default_factory=dict)

    def line_of(self, reply_index: int) -> int:
        """The 1-based line number that reply ``reply_index`` (0-based) answers."""
        if self.lines is None:
            return reply_index + 1
        return self.lines[reply_index]


class Framing(TypingProtocol):
    """One reply framing: a decoder factory and a planner."""

    name: str
    #: Whether the framing knows how many replies each command has, so that a
    #: late reply can never be mistaken for another request's (line and
    #: terminator framings assume one reply per line, and cannot know).
    counts_known: bool
    #: send_replies when the setting is not given: "none", "discard" or "check".
    default_send_replies: str

    def decoder(self) -> Decoder:
        """A fresh decoder for a new connection."""
        ...

    def plan(self, lines: Sequence[bytes]) -> Plan:
        """Replies expected by ``lines`` (without delimiters); BodyError (400)
        for lines this upstream would misread."""
        ...
