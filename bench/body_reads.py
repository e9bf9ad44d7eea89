"""CPU cost of a request body that arrives in small reads (issue 10).

A 1 MiB ``POST /send`` body is sent to the real bridge process over loopback
in 1 KiB writes (each followed by a short pause, so that the bridge reads
about 1 KiB at a time) and in 64 KiB writes.  The bridge's CPU time comes
from /proc/PID/schedstat (nanoseconds; utime+stime from /proc/PID/stat where
schedstat is missing).  A bare Twisted protocol (reads and discards, then
answers) is measured on the same 1 KiB reads: that is the reactor's own cost
per read, which no HTTP parser can avoid.  The target:

    (bridge at 1 KiB - bare Twisted at 1 KiB) <= 2.5 x bridge at 64 KiB

Run by hand: ``.venv/bin/python bench/body_reads.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BODY = b"".join(b"line %09d of a one mebibyte body.....\n" % n for n in range(26215))[: 1 << 20]
BODY = BODY[: BODY.rfind(b"\n") + 1]
BARE = """
import sys
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
ANSWER = b"HTTP/1.1 202 Accepted\\r\\nContent-Length: 0\\r\\n\\r\\n"
class Bare(Protocol):
    def connectionMade(self): self.seen = 0
    def dataReceived(self, data):
        self.seen += len(data)
        if self.seen >= int(sys.argv[1]):
            self.seen = 0
            self.transport.write(ANSWER)
port = reactor.listenTCP(0, Factory.forProtocol(Bare), interface="127.0.0.1")
print("listening on http://127.0.0.1:%d/" % port.getHost().port, flush=True)
reactor.run()
"""


def cpu_ns(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def start(argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode("utf-8", "replace")
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return process, int(found.group(1))
    process.kill()
    raise RuntimeError(f"{argv[0]} did not start")


def post(port: int, piece: int, pause: float) -> None:
    head = (b"POST /send HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % len(BODY))
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.sendall(head)
        view = memoryview(BODY)
        for start in range(0, len(BODY), piece):
            client.sendall(view[start:start + piece])
            if pause:
                time.sleep(pause)
        answer = client.recv(4096)
        if not answer.startswith(b"HTTP/1.1 202"):
            raise RuntimeError(f"unexpected answer {answer[:80]!r}")


def measure(pid: int, port: int, piece: int, pause: float, rounds: int) -> float:
    """Milliseconds of the server's CPU per body (median of ``rounds``)."""
    post(port, piece, pause)  # warm-up
    costs = []
    for _ in range(rounds):
        before = cpu_ns(pid)
        post(port, piece, pause)
        time.sleep(0.05)  # let the server finish its side of the answer
        costs.append((cpu_ns(pid) - before) / 1e6)
    costs.sort()
    return costs[len(costs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pause", type=float, default=0.0002,
                        help="seconds between 1 KiB writes (so that reads stay small)")
    args = parser.parse_args()
    sink = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sink.py")],
                            stdout=subprocess.PIPE, cwd=ROOT)
    assert sink.stdout is not None
    data_port = int(re.search(rb"data=(\d+)", sink.stdout.readline()).group(1))  # type: ignore[union-attr]
    bridge, bridge_port = start([sys.executable, "-m", "bridge", "--listen", "127.0.0.1:0",
                                 "--upstream", f"127.0.0.1:{data_port}"])
    head_size = len(b"POST /send HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n"
                    % len(BODY))
    bare, bare_port = start([sys.executable, "-c", BARE, str(head_size + len(BODY))])
    try:
        time.sleep(1.0)  # the bridge connects to the sink
        small = measure(bridge.pid, bridge_port, 1024, args.pause, args.rounds)
        large = measure(bridge.pid, bridge_port, 65536, 0.0, args.rounds)
        base = measure(bare.pid, bare_port, 1024, args.pause, args.rounds)
    finally:
        for process in (bridge, bare, sink):
            process.terminate()
            process.wait(10)
    ratio = (small - base) / large
    print(f"body of {len(BODY)} bytes, median of {args.rounds} rounds, CPU ms per body:")
    print(f"  bridge, 1 KiB reads:        {small:8.2f}")
    print(f"  bare Twisted, 1 KiB reads:  {base:8.2f}")
    print(f"  bridge, 64 KiB reads:       {large:8.2f}")
    print(f"  (bridge 1 KiB - bare) / bridge 64 KiB = {ratio:.2f} (target <= 2.5)")
    return 0 if ratio <= 2.5 else 1


if __name__ == "__main__":
    sys.exit(main())
