"""A replying upstream for POST /request, and a direct TCP round-trip probe.

``replier.py serve`` answers every line it receives (LF or CRLF ended) with
``+OK\\r\\n``: one epoll loop, counting LF bytes, no line parsing, so it adds
as little as possible to a round trip.  It prints
``replier data=PORT``.

``replier.py probe --port PORT`` measures the direct round trip the bridge is
compared with: ``--concurrency`` connections each send one 32-byte line and
wait for its reply, for ``--duration`` seconds; it prints one JSON line with
the round trips per second and latency percentiles in microseconds.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time
from typing import cast

REPLY = b"+OK\r\n"
LINE = b"bench-line-0123456789abcdef-0001\r\n"  # 32 bytes + CRLF, like the HTTP bodies


def serve(host: str) -> int:
    """One thread, one epoll loop: no GIL hand-offs between connections."""
    listener = socket.create_server((host, 0), backlog=128)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    print(f"replier data={listener.getsockname()[1]}", flush=True)
    try:
        while True:
            for key, _ in selector.select():
                sock = key.fileobj
                if sock is listener:
                    conn, _ = listener.accept()
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    selector.register(conn, selectors.EVENT_READ)
                    continue
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(1 << 18)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    sock.close()
                    continue
                count = data.count(b"\n")
                if count:
                    # Replies are tiny; a blocking send of them is fine here.
                    sock.setblocking(True)
                    try:
                        sock.sendall(REPLY * count)
                    except OSError:
                        pass
                    sock.setblocking(False)
    except KeyboardInterrupt:
        return 0


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def probe_one(host: str, port: int, duration: float) -> list[float]:
    """Blocking ping-pong on one connection (the concurrency 1 case)."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples: list[float] = []
    clock = time.perf_counter
    deadline = clock() + duration
    recv, send = sock.recv, sock.sendall
    while True:
        start = clock()
        if start >= deadline:
            break
        send(LINE)
        data = recv(4096)
        while not data.endswith(b"\n"):
            data += recv(4096)
        samples.append(clock() - start)
    sock.close()
    return samples


def probe_many(host: str, port: int, concurrency: int, duration: float) -> list[float]:
    """``concurrency`` connections, each one line in flight, one epoll loop."""
    selector = selectors.DefaultSelector()
    clock = time.perf_counter
    sent_at: dict[socket.socket, float] = {}
    samples: list[float] = []
    for _ in range(concurrency):
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sent_at[sock] = clock()
        sock.send(LINE)
    deadline = clock() + duration
    pending = dict.fromkeys(sent_at, b"")
    while sent_at:
        for key, _ in selector.select(1.0):
            sock = cast(socket.socket, key.fileobj)
            data = pending[sock] + sock.recv(4096)
            if not data.endswith(b"\n"):
                pending[sock] = data
                continue
            pending[sock] = b""
            now = clock()
            samples.append(now - sent_at[sock])
            if now >= deadline:
                selector.unregister(sock)
                sock.close()
                del sent_at[sock]
                continue
            sent_at[sock] = now
            sock.send(LINE)
    return samples


def probe(host: str, port: int, concurrency: int, duration: float) -> int:
    started = time.perf_counter()
    if concurrency == 1:
        samples = probe_one(host, port, duration)
    else:
        samples = probe_many(host, port, concurrency, duration)
    elapsed = time.perf_counter() - started
    samples.sort()
    print(json.dumps({
        "round_trips": len(samples),
        "seconds": elapsed,
        "rate": len(samples) / elapsed,
        "p50_us": percentile(samples, 50) * 1e6,
        "p90_us": percentile(samples, 90) * 1e6,
        "p99_us": percentile(samples, 99) * 1e6,
        "mean_us": (sum(samples) / len(samples) * 1e6) if samples else 0.0,
    }), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="answer every line with +OK")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_probe = sub.add_parser("probe", help="measure direct TCP round trips")
    p_probe.add_argument("--host", default="127.0.0.1")
    p_probe.add_argument("--port", type=int, required=True)
    p_probe.add_argument("--concurrency", type=int, default=1)
    p_probe.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    if args.command == "serve":
        return serve(args.host)
    return probe(args.host, args.port, args.concurrency, args.duration)


if __name__ == "__main__":
    sys.exit(main())
