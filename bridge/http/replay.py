"""Numbering and keeping recent events, for clients that come back.

An EventSource that loses its stream reconnects by itself and sends the id
of the last event it received as ``Last-Event-ID``.  :class:`EventLog` gives
every event an id unique across restarts, keeps the last ``keep`` of them in
their wire form, and answers such a client with what it missed, or, when
that is no longer known, with an ``event: gap`` that says so: a client is
never left to believe it saw everything when it did not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

from bridge.http.sse import check_boot, event_id, format_event, parse_event_id

_SHOWN_ID_CHARS = 64

#: Kept events never take more than this, whatever ``keep`` says: an event
#: may be large (a multi-line reply, a big pub/sub message), and the log is
#: shared by every subscriber for the life of the process.  The oldest go
#: first; a client that needed them gets an ``event: gap``.
MAX_KEPT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Resume:
    """What a subscriber gets before live events."""

    #: An ``event: gap`` saying what the client missed and why, or None.
    gap: bytes | None
    #: The kept events it has not seen, oldest first.
    events: Sequence[bytes]


class EventLog:
    """Gives events their ids and keeps the last ``keep`` (0 keeps none), as
    long as they fit in ``max_bytes``.

    Kept events are always the newest ones, numbered without holes, so the
    sequence numbers of what is kept follow from ``sequence`` and the count.
    """

    def __init__(self, boot: str, keep: int, max_bytes: int = MAX_KEPT_BYTES) -> None:
        if keep < 0:
            raise ValueError(f"keep must be 0 or more, got {keep}")
        self.boot = check_boot(boot)
        #: Sequence number of the newest event (0: none yet); counts from 1.
        self.sequence = 0
        self._keep = keep
        self._max_bytes = max_bytes
        self._kept: deque[bytes] = deque()
        self._kept_bytes = 0

    def record(self, kind: str, lines: Sequence[str], json_lines: bool = False) -> bytes:
        """Number a new event, keep it, and return its wire form."""
        self.sequence += 1
        event = format_event(kind, event_id(self.boot, self.sequence), lines, json_lines)
        if self._keep:
            kept = self._kept
            kept.append(event)
            self._kept_bytes += len(event)
            while len(kept) > self._keep or self._kept_bytes > self._max_bytes:
                self._kept_bytes -= len(kept.popleft())
        return event

    def resume(self, last_event_id: str | None) -> Resume:
        """What a client that last saw ``last_event_id`` gets before live events.

        No id (a first connection): nothing.  An id of this run whose
        successors are all kept: those.  Otherwise an ``event: gap`` (the
        bridge restarted, the successors are no longer kept, or the id is not
        one of ours) followed by everything kept.
        """
        if not last_event_id:
            return Resume(None, ())
        oldest = self.sequence - len(self._kept) + 1  # of what is kept
        parsed = parse_event_id(last_event_id)
        if parsed is None or (parsed[0] == self.boot and parsed[1] > self.sequence):
            shown = last_event_id[:_SHOWN_ID_CHARS] + (
                "..." if len(last_event_id) > _SHOWN_ID_CHARS else "")
            why = (f"Last-Event-ID {shown!r} is not an event id of this bridge; "
                   "earlier events may have been missed")
        elif parsed[0] != self.boot:
            why = (f"the bridge restarted after event {last_event_id}; "
                   "the events that followed it in that run are lost")
            if oldest > 1:
                why += f", and so are the first {oldest - 1} of this run"
        elif parsed[1] >= oldest - 1:
            return Resume(None, tuple(islice(self._kept, parsed[1] - oldest + 1, None)))
        else:
            missed = oldest - 1 - parsed[1]
            why = f"events after {last_event_id} are no longer kept; {missed} were missed"
        # The gap carries the id just before the first kept event: a client
        # that reconnects right after it resumes from there instead of being
        # told about the same gap again.
        gap = format_event("gap", event_id(self.boot, oldest - 1), [why])
        return Resume(gap, tuple(self._kept))
