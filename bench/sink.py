"""A line-counting upstream for the benchmark: it must never be the bottleneck.

Each upstream connection gets its own thread doing large ``recv_into`` calls
into one preallocated buffer and counting LF bytes in place (no copies, no
line splitting).  The counts are exact and are read over a control socket, so
the harness can compare them with the lines the bridge acknowledged.

Control protocol (one command per line on the control port, one JSON answer
line each):

    STATS        {"lines": N, "bytes": N, "connections": N, "active": N, "rate": R}
    RATE <B/s>   change the reading rate (0 = as fast as possible)

``--rate`` reads about that many bytes per second (the slow upstream of the
memory scenario); the receive buffer is then kept small so that the kernel
does not quietly absorb what the bridge would otherwise have to hold.

On start it prints one line: ``sink data=PORT control=PORT``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

CHUNK = 1 << 20


class Sink:
    def __init__(self, rate: int, rcvbuf: int | None) -> None:
        self.rate = rate
        self.rcvbuf = rcvbuf
        self.counters: list[list[int]] = []  # one [lines, bytes] per connection
        self.active = 0
        self.lock = threading.Lock()

    def stats(self) -> dict[str, int]:
        with self.lock:
            counters = list(self.counters)
            active = self.active
        return {
            "lines": sum(c[0] for c in counters),
            "bytes": sum(c[1] for c in counters),
            "connections": len(counters),
            "active": active,
            "rate": self.rate,
        }

    def serve_connection(self, conn: socket.socket) -> None:
        counter = [0, 0]
        with self.lock:
            self.counters.append(counter)
            self.active += 1
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        tokens = 0.0  # token bucket for the slow mode, in bytes
        last = time.monotonic()
        try:
            while True:
                rate = self.rate
                if rate:
                    now = time.monotonic()
                    tokens = min(tokens + (now - last) * rate, max(rate / 10, 65536.0))
                    last = now
                    if tokens < 4096:
                        time.sleep((4096 - tokens) / rate)
                        continue
                    size = min(int(tokens), CHUNK)
                    n = conn.recv_into(view[:size], size)
                    tokens -= n
                else:
                    n = conn.recv_into(buffer, CHUNK)
                    last = time.monotonic()
                if not n:
                    break
                counter[0] += buffer.count(b"\n", 0, n)
                counter[1] += n
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.active -= 1

    def serve_data(self, listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=self.serve_connection, args=(conn,), daemon=True).start()

    def serve_control(self, listener: socket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=self.control_session, args=(conn,), daemon=True).start()

    def control_session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for raw in stream:
                words = raw.decode("ascii", "replace").split()
                if not words:
                    continue
                if words[0].upper() == "RATE" and len(words) == 2:
                    self.rate = int(float(words[1]))
                stream.write(json.dumps(self.stats()).encode() + b"\n")
                stream.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--rate", type=float, default=0,
                        help="bytes per second to read (0 = as fast as possible)")
    parser.add_argument("--rcvbuf", type=int, default=None,
                        help="SO_RCVBUF for upstream connections (default: kernel's; "
                        "64 KiB when --rate is set)")
    args = parser.parse_args()
    rcvbuf = args.rcvbuf if args.rcvbuf is not None else (65536 if args.rate else None)
    sink = Sink(int(args.rate), rcvbuf)
    data = socket.create_server((args.host, 0), backlog=128)
    if rcvbuf:
        # Set on the listener so accepted sockets start with it (no autotuning).
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    control = socket.create_server((args.host, 0))
    threading.Thread(target=sink.serve_data, args=(data,), daemon=True).start()
    threading.Thread(target=sink.serve_control, args=(control,), daemon=True).start()
    print(f"sink data={data.getsockname()[1]} control={control.getsockname()[1]}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
