"""Which records are retired, and how far delivery has got: a small file.

Retiring is not made durable with an fsync: a retire lost in a crash only
means the record is delivered again (at least once), and counted as
redelivered.  The file is replaced atomically (write, rename), so a crash
leaves the old or the new one; an unreadable one is taken as "nothing
retired", which again errs on the side of delivering twice.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field

NAME = "retired.json"


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


def load(directory: str) -> RetireState:
    try:
        with open(os.path.join(directory, NAME), "rb") as source:
            text = source.read()
        body, _, check = text.rpartition(b"\n")
        if zlib.crc32(body) != int(check):
            return RetireState()
        document = json.loads(body)
        return RetireState(int(document["retired_below"]),
                           {int(i) for i in document["retired"]}, int(document["handed_out"]))
    except (OSError, ValueError, KeyError, TypeError):
        return RetireState()


def save(directory: str, state: RetireState) -> None:
    body = json.dumps({"retired_below": state.retired_below, "retired": sorted(state.retired),
                       "handed_out": state.handed_out}).encode("ascii")
    temporary = os.path.join(directory, NAME + ".new")
    with open(temporary, "wb") as target:
        target.write(body + b"\n%d" % zlib.crc32(body))
    os.replace(temporary, os.path.join(directory, NAME))
