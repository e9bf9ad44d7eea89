"""``GET /events`` over a real loopback socket, as bytes, with nothing in
between: :class:`RawEventClient`, and the event-stream parsing it uses."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from tests.http_wire import Dechunker, parse_head
from tests.ports import LOOPBACK

__all__ = ["RawEventClient", "SSEEvent", "parse_sse_block"]


@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event (``event:``/``id:``/``data:`` fields)."""

    kind: str
    id: str | None
    data: str


def parse_sse_block(block: bytes) -> tuple[SSEEvent | None, list[str]]:
    """One ``\\n\\n``-terminated block of an event stream (without the
    terminator): its event, if it has fields, and its comments.  Several
    ``data:`` fields are joined with LF, as EventSource does."""
    fields: dict[str, str] = {}
    data: list[str] = []
    comments: list[str] = []
    for line in block.decode("utf-8").split("\n"):
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    if not fields and not data:
        return None, comments
    return SSEEvent(fields.get("event", "message"), fields.get("id"), "\n".join(data)), comments


class RawEventClient:
    """``GET /events`` over a plain socket, as bytes, with nothing in between.

    The socket is non-blocking: :meth:`poll` takes whatever has arrived,
    de-chunks it and parses the events, so a test polls it with
    :func:`tests.waiting.wait_for` while the reactor (and the test's line
    server) runs.  ``ended``: the chunked body ended properly; ``eof``: the
    bridge closed the connection (FIN); ``reset``: the connection was reset
    (RST).
    """

    def __init__(
        self, port: int, last_event_id: str | None = None, receive_buffer: int | None = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect((LOOPBACK, port))
        header = "" if last_event_id is None else f"Last-Event-ID: {last_event_id}\r\n"
        self.sock.sendall(
            f"GET /events HTTP/1.1\r\nHost: {LOOPBACK}\r\n{header}\r\n".encode())
        self.sock.setblocking(False)
        self.head: bytes | None = None
        self.events: list[SSEEvent] = []
        self.comments: list[str] = []
        self.received = 0
        self.eof = self.reset = False
        self._wire = bytearray()  # received before the head was complete
        self._chunks = Dechunker()
        self._body = bytearray()  # de-chunked, not yet parsed

    @property
    def status(self) -> int | None:
        """The status code, once the head arrived."""
        if self.head is None:
            return None
        status_line, _ = parse_head(self.head)
        return int(status_line.split(b" ")[1])

    @property
    def headers(self) -> dict[bytes, list[bytes]]:
        assert self.head is not None, "poll until the head arrived"
        return parse_head(self.head)[1]

    @property
    def ended(self) -> bool:
        return self._chunks.ended

    def poll(self) -> int:
        """Read what has arrived (never blocks); returns the events so far."""
        while not (self.eof or self.reset):
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except ConnectionResetError:
                self.reset = True
                break
            if not data:
                self.eof = True
                break
            self.received += len(data)
            self._receive(data)
        self._parse()
        return len(self.events)

    def _receive(self, data: bytes) -> None:
        if self.head is None:
            self._wire += data
            end = self._wire.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head, data = bytes(self._wire[:end]), bytes(self._wire[end + 4:])
            self._wire.clear()
        self._body += self._chunks.feed(data)

    def _parse(self) -> None:
        body = self._body
        position = 0
        while (end := body.find(b"\n\n", position)) >= 0:
            event, comments = parse_sse_block(bytes(body[position:end]))
            self.comments.extend(comments)
            if event is not None:
                self.events.append(event)
            position = end + 2
        del body[:position]

    def data(self, kind: str = "unsolicited") -> list[str]:
        """The ``data`` of every event of ``kind`` so far."""
        return [event.data for event in self.events if event.kind == kind]

    def describe(self) -> str:
        last = self.events[-1] if self.events else None
        return (f"raw /events client: {self.received} bytes, {len(self.events)} events "
                f"(last {last}), ended={self.ended} eof={self.eof} reset={self.reset}")

    def close(self) -> None:
        self.sock.close()
