"""The storage engines measured for the spool (issue 12), behind one small interface.

Each candidate stores records (id, line count, CRC-32, payload) in acceptance
order.  ``append`` is one transaction (and, with ``fsync``, one fsync) for a
whole batch: that is group commit, the way the spool uses it.  The CRC is the
harness's own, so that a damaged payload is found whatever the engine checks.

* ``sqlite``: the standard library's sqlite3, WAL mode; ``synchronous=FULL``
  (an fsync of the WAL at every commit) for ``fsync always``, ``NORMAL`` (the WAL
  is synced only at checkpoints) for ``never``.
* ``lmdb``: the ``lmdb`` package (py-lmdb, LMDB 0.9); ``sync=True`` (an
  fdatasync at every commit) for always, ``sync=False`` for never.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import zlib
from typing import Protocol

Row = tuple[int, bytes, int]  # id, payload, lines

HEAD = struct.Struct(">II")  # lines, crc32 (lmdb value prefix)
KEY = struct.Struct(">Q")


def crc(record_id: int, payload: bytes, lines: int) -> int:
    return zlib.crc32(payload, zlib.crc32(KEY.pack(record_id) + HEAD.pack(lines, 0)))


class Corrupt(Exception):  # noqa: N818 (a finding, not a failure)
    """A record whose CRC does not match."""


class Candidate(Protocol):
    name: str

    def append(self, records: list[tuple[bytes, int]]) -> list[int]: ...
    def read(self, after: int, limit: int) -> list[Row]: ...
    def retire(self, ids: list[int]) -> None: ...
    def last_id(self) -> int: ...
    def close(self) -> None: ...


class SQLiteCandidate:
    name = "sqlite"

    def __init__(self, directory: str, fsync: bool, map_size: int = 0) -> None:
        self.db = sqlite3.connect(os.path.join(directory, "spool.db"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, lines INTEGER NOT NULL,"
            " crc INTEGER NOT NULL, payload BLOB NOT NULL)"
        )
        self._next = self.last_id() + 1

    def last_id(self) -> int:
        row = self.db.execute("SELECT max(id) FROM records").fetchone()
        return row[0] or 0

    def append(self, records: list[tuple[bytes, int]]) -> list[int]:
        first = self._next
        rows = [(first + i, lines, crc(first + i, payload, lines), payload)
                for i, (payload, lines) in enumerate(records)]
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self._next = first + len(rows)
        return [row[0] for row in rows]

    def read(self, after: int, limit: int) -> list[Row]:
        out = []
        for record_id, lines, check, payload in self.db.execute(
            "SELECT id, lines, crc, payload FROM records WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        ):
            if crc(record_id, payload, lines) != check:
                raise Corrupt(record_id)
            out.append((record_id, payload, lines))
        return out

    def retire(self, ids: list[int]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("DELETE FROM records WHERE id = ?", [(i,) for i in ids])
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class LMDBCandidate:
    name = "lmdb"

    def __init__(self, directory: str, fsync: bool, map_size: int = 8 << 30) -> None:
        import lmdb  # bench-only dependency

        self.env = lmdb.open(directory, map_size=map_size, sync=fsync, metasync=fsync,
                             max_dbs=0, lock=True)
        self._next = self.last_id() + 1

    def last_id(self) -> int:
        with self.env.begin() as txn:
            cursor = txn.cursor()
            return KEY.unpack(cursor.key())[0] if cursor.last() else 0

    def append(self, records: list[tuple[bytes, int]]) -> list[int]:
        first = self._next
        ids = []
        with self.env.begin(write=True) as txn:
            for i, (payload, lines) in enumerate(records):
                record_id = first + i
                value = HEAD.pack(lines, crc(record_id, payload, lines)) + payload
                txn.put(KEY.pack(record_id), value, append=True)
                ids.append(record_id)
        self._next = first + len(ids)
        return ids

    def read(self, after: int, limit: int) -> list[Row]:
        out: list[Row] = []
        with self.env.begin(buffers=False) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(KEY.pack(after + 1)):
                return out
            for key, value in cursor:
                record_id = KEY.unpack(key)[0]
                lines, check = HEAD.unpack_from(value)
                payload = value[HEAD.size:]
                if crc(record_id, payload, lines) != check:
                    raise Corrupt(record_id)
                out.append((record_id, payload, lines))
                if len(out) >= limit:
                    break
        return out

    def retire(self, ids: list[int]) -> None:
        with self.env.begin(write=True) as txn:
            for record_id in ids:
                txn.delete(KEY.pack(record_id))

    def close(self) -> None:
        self.env.close()


class NaiveLogCandidate:
    """A first look at the upper bound: one file, CRC-framed records, one
    write and one fdatasync per batch.  Retire is a watermark file."""

    name = "log"
    FRAME = struct.Struct(">IQII")  # length, id, lines, crc

    def __init__(self, directory: str, fsync: bool, map_size: int = 0) -> None:
        self.path = os.path.join(directory, "log")
        self.fsync = fsync
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._next = 1
        self._offset = 0

    def last_id(self) -> int:
        return self._next - 1

    def append(self, records: list[tuple[bytes, int]]) -> list[int]:
        first = self._next
        parts = []
        for i, (payload, lines) in enumerate(records):
            parts.append(self.FRAME.pack(len(payload), first + i, lines,
                                         crc(first + i, payload, lines)))
            parts.append(payload)
        os.write(self.fd, b"".join(parts))
        if self.fsync:
            os.fdatasync(self.fd)
        self._next = first + len(records)
        return list(range(first, self._next))

    def read(self, after: int, limit: int) -> list[Row]:
        out: list[Row] = []
        while len(out) < limit:
            head = os.pread(self.fd, self.FRAME.size, self._offset)
            if len(head) < self.FRAME.size:
                break
            length, record_id, lines, check = self.FRAME.unpack(head)
            payload = os.pread(self.fd, length, self._offset + self.FRAME.size)
            if crc(record_id, payload, lines) != check:
                raise Corrupt(record_id)
            self._offset += self.FRAME.size + length
            if record_id > after:
                out.append((record_id, payload, lines))
        return out

    def retire(self, ids: list[int]) -> None:
        with open(self.path + ".retired", "w") as mark:
            mark.write(str(max(ids)))

    def close(self) -> None:
        os.close(self.fd)


CANDIDATES = {"sqlite": SQLiteCandidate, "lmdb": LMDBCandidate, "log": NaiveLogCandidate}


def open_candidate(name: str, directory: str, fsync: bool, map_size: int = 8 << 30) -> Candidate:
    os.makedirs(directory, exist_ok=True)
    return CANDIDATES[name](directory, fsync, map_size)  # type: ignore[no-any-return]


def small_payload(record_id: int) -> tuple[bytes, int]:
    """One /send of one line, about 40 bytes."""
    return b"metric.%08d 1234.5678 1764460800\r\n" % (record_id % 10**8), 1


def bulk_payload(record_id: int) -> tuple[bytes, int]:
    """A 1 MiB /send of about 30k lines, as one record."""
    line = b"metric.%08d 1234.5678 1764460800\r\n" % (record_id % 10**8)
    count = (1 << 20) // len(line)
    return line * count, count


def medium_payload(record_id: int) -> tuple[bytes, int]:
    """make bench's bulk /send: 1000 lines of 32 bytes."""
    return b"metric.%08d 12345678 17644608\r\n" % (record_id % 10**8) * 1000, 1000


class LogCandidate:
    """The engine built for the spool: bridge.upstream.spool's segment store."""

    name = "log"

    def __init__(self, directory: str, fsync: bool, map_size: int = 0) -> None:
        from bridge.upstream.spool.record import checksum
        from bridge.upstream.spool.store import SegmentStore

        self.checksum = checksum

        self.store, self.report = SegmentStore.open(directory, fsync=fsync)

    def last_id(self) -> int:
        return self.store.stats().next_id - 1

    def append(self, records: list[tuple[bytes, int]]) -> list[int]:
        return self.store.append([(payload, lines, 0.0, self.checksum(payload))
                                  for payload, lines in records])

    def read(self, after: int, limit: int) -> list[Row]:
        # The store reads on from where it stopped; ``after`` only filters.
        return [(r.record_id, r.payload, r.lines) for r in self.store.read(limit, 64 << 20)
                if r.record_id > after]

    def retire(self, ids: list[int]) -> None:
        self.store.retire(ids)

    def close(self) -> None:
        self.store.close()


CANDIDATES["log"] = LogCandidate
