"""Which records are retired, and how far delivery has got: two small files.

Retiring is not made durable with an fsync: a retire lost in a crash only
means the record is delivered again (at least once), and counted as
redelivered.  Two slots are written in turn, so a crash tearing one leaves the
other; when neither can be read, nothing is taken as retired, which again
errs on the side of delivering twice.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field

NAMES = ("retired.0", "retired.1")


@dataclass
class RetireState:
    """``retired_below``: every id below it is retired (or set aside);
    ``retired``: the retired ids at or above it (out of order);
    ``handed_out``: the highest id ever handed out for delivery."""

    retired_below: int = 1
    retired: set[int] = field(default_factory=set)
    handed_out: int = 0

    def is_retired(self, record_id: int) -> bool:
        return record_id < self.retired_below or record_id in self.retired

    def retire(self, record_id: int) -> bool:
        """Mark one id retired; False when it already was."""
        if self.is_retired(record_id):
            return False
        self.retired.add(record_id)
        below = self.retired_below
        retired = self.retired
        while below in retired:
            retired.discard(below)
            below += 1
        self.retired_below = below
        return True

    def advance_to(self, record_id: int) -> None:
        """Everything below ``record_id`` is gone (e.g. its segment was deleted)."""
        if record_id > self.retired_below:
            self.retired_below = record_id
            retired = {i for i in self.retired if i >= record_id}
            while record_id in retired:
                retired.discard(record_id)
                record_id += 1
            self.retired_below = record_id
            self.retired = retired

    def pending_between(self, first: int, end: int) -> int:
        """How many ids in ``[first, end)`` are not retired."""
        first = max(first, self.retired_below)
        if end <= first:
            return 0
        return end - first - sum(1 for i in self.retired if first <= i < end)


class StateFile:
    """Two slots written in turn, each with a sequence number and a CRC.

    Overwriting a slot in place costs a write; a rename over an existing
    file made ext4 flush data first (about 3 ms a retire batch here).  A
    slot torn by a crash fails its CRC and the other, one save older, is used.
    The bytes are written over the old ones before the file is cut to length
    (not truncated first, and only when the length changed), so a save needs
    no new disk space unless the state grew: retiring goes on while a full
    disk refuses new records.  Both files stay open: a save is one pwrite.
    """

    def __init__(self, directory: str) -> None:
        self._paths = tuple(os.path.join(directory, name) for name in NAMES)
        self._sequence = 0
        self._fds: list[int | None] = [None, None]  # opened on first save, kept
        self._sizes = [-1, -1]  # what each slot's file holds, as last written

    def load(self) -> RetireState:
        best: tuple[int, RetireState] | None = None
        for path in self._paths:
            slot = _read_slot(path)
            if slot is not None and (best is None or slot[0] > best[0]):
                best = slot
        if best is None:
            return RetireState()
        self._sequence = best[0]
        return best[1]

    def save(self, state: RetireState) -> None:
        self._sequence += 1
        # The JSON json.dumps would write, formatted directly (a save per job).
        body = b'{"sequence": %d, "retired_below": %d, "retired": [%s], "handed_out": %d}' % (
            self._sequence, state.retired_below,
            b", ".join(b"%d" % i for i in sorted(state.retired)), state.handed_out)
        data = memoryview(body + b"\n%d" % zlib.crc32(body))
        slot = self._sequence % 2
        fd = self._fds[slot]
        if fd is None:
            fd = self._fds[slot] = os.open(self._paths[slot], os.O_WRONLY | os.O_CREAT, 0o644)
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], written)
        if self._sizes[slot] != len(data):
            os.ftruncate(fd, len(data))
            self._sizes[slot] = len(data)

    def close(self) -> None:
        for slot, fd in enumerate(self._fds):
            if fd is not None:
                os.close(fd)
                self._fds[slot] = None


def _read_slot(path: str) -> tuple[int, RetireState] | None:
    try:
        with open(path, "rb") as source:
            text = source.read()
        body, _, check = text.rpartition(b"\n")
        if zlib.crc32(body) != int(check):
            return None
        document = json.loads(body)
        return int(document["sequence"]), RetireState(
            int(document["retired_below"]), {int(i) for i in document["retired"]},
            int(document["handed_out"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
