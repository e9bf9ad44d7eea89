"""How one spooled record is laid out on disk, and how damage is recognised.

A record is a 36-byte header followed by the payload (one /send request's
framed lines)::

    magic  4s   b"\\xa7SR1": where a record starts, for resynchronising
    length u32  payload bytes
    id     u64  record id: dense, one more than the record before
    lines  u32  lines in the payload
    at     f64  when the request was accepted (epoch seconds)
    pcrc   u32  CRC-32 of the payload
    hcrc   u32  CRC-32 of the 32 bytes before it

The header has its own CRC so that a damaged payload still names its record
(and its exact extent), while a damaged header is skipped by searching for
the next magic whose header checks out.  A false match needs a 32-bit CRC
collision inside damaged bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"\xa7SR1"
_HEAD = struct.Struct(">4sIQIdI")
_HCRC = struct.Struct(">I")
HEADER_SIZE = _HEAD.size + _HCRC.size  # 36


@dataclass(frozen=True, slots=True)
class Header:
    """A header whose own CRC checked out."""

    length: int
    record_id: int
    lines: int
    accepted_at: float
    payload_crc: int

    @property
    def size(self) -> int:
        """Bytes the whole record takes on disk."""
        return HEADER_SIZE + self.length


def encode(record_id: int, lines: int, accepted_at: float, payload: bytes) -> bytes:
    """The header of a record (write it followed by ``payload``)."""
    head = _HEAD.pack(MAGIC, len(payload), record_id, lines, accepted_at, zlib.crc32(payload))
    return head + _HCRC.pack(zlib.crc32(head))


def decode_header(buffer: bytes | memoryview, offset: int) -> Header | None:
    """The header at ``offset``, or None when it is not an intact header."""
    if len(buffer) - offset < HEADER_SIZE:
        return None
    magic, length, record_id, lines, accepted_at, payload_crc = _HEAD.unpack_from(buffer, offset)
    if magic != MAGIC:
        return None
    (check,) = _HCRC.unpack_from(buffer, offset + _HEAD.size)
    if zlib.crc32(buffer[offset:offset + _HEAD.size]) != check:
        return None
    return Header(length, record_id, lines, accepted_at, payload_crc)


def payload_intact(header: Header, payload: bytes | memoryview) -> bool:
    return len(payload) == header.length and zlib.crc32(payload) == header.payload_crc
