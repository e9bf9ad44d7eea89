"""Run by tests/test_spool_processes.py: appends through the real spool, on a
real reactor and writer thread, with many appends in flight at once; prints
``A <id> <token> <size>`` when an append's Deferred fires, and ``R <id>``
before retiring a record.  It runs until it is killed.

``--forks`` makes it a fork server instead: it imports everything once, then
for each line ``DIRECTORY FSYNC SEED LOG`` on its stdin forks a writer whose
stdout is the file LOG, prints the writer's PID, waits for it (the test kills
it) and prints ``exited STATUS``; it ends when its stdin closes.  Twenty kills
then cost twenty forks instead of twenty interpreters importing Twisted."""

from __future__ import annotations

import os
import random
import sys

# Not the reactor: each forked writer installs its own (see serve_forks).
from twisted.internet import epollreactor, task  # noqa: F401 (imported once, before forking)

from bridge.upstream.spool.runner import WriterThread
from bridge.upstream.spool.spool import Spool, open_spool


def payload(token: str, size: int) -> bytes:
    unit = token.encode("ascii") + b"."
    return (unit * (size // len(unit) + 1))[: size - 2] + b"\r\n"


def main(directory: str, fsync: str, seed: int) -> None:
    from twisted.internet import reactor

    rng = random.Random(seed)
    runner = WriterThread(reactor)
    runner.start()
    out = sys.stdout
    counter = iter(range(1 << 62))

    def acked(record_id: int, token: str, size: int) -> None:
        out.write(f"A {record_id} {token} {size}\n")
        out.flush()

    def deliver(spool: Spool) -> None:
        def retire(records: list) -> None:  # type: ignore[type-arg]
            out.write("".join(f"R {record.record_id}\n" for record in records))
            out.flush()
            for record in records:
                spool.retire(record.record_id)

        spool.peek_batch(rng.randint(1, 50)).addCallback(retire)

    def tick(spool: Spool) -> None:
        for _ in range(rng.randint(1, 16)):
            token = f"{seed}-{next(counter)}"
            size = rng.choice((40, 200, 4_000, 40_000)) if rng.random() < 0.05 else 40
            spool.append(payload(token, size), 1).addCallback(acked, token, size)
        if rng.random() < 0.5:
            deliver(spool)

    def opened(spool: Spool) -> None:
        task.LoopingCall(tick, spool).start(0.002)

    open_spool(directory, 1 << 30, fsync, runner=runner, clock=reactor,
               segment_bytes=1 << 20).addCallback(opened)
    reactor.run()  # type: ignore[attr-defined]


def serve_forks() -> None:
    for request in sys.stdin:
        directory, fsync, seed, log_path = request.split()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # the writer
            try:
                os.close(0)
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log, 1)
                os.close(log)
                main(directory, fsync, int(seed))
            finally:
                os._exit(1)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print("exited", status, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--forks"]:
        serve_forks()
    else:
        main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
