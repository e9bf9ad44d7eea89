"""Helpers for the spool tests: a runner stepped by hand, disk calls that
fail or count, and byte surgery on segment files."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from bridge.upstream.spool.store import SPARE, SUFFIX


class StepRunner:
    """Queues each job; the test runs them one by one with :meth:`step`."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        self.jobs.append((work, done))
        return done

    def step(self) -> None:
        self.run()()

    def run(self) -> Callable[[], None]:
        """Do the next job's work now; return what fires its Deferred, for
        the test to call later (as a busy reactor would notice it later)."""
        work, done = self.jobs.pop(0)
        try:
            result = work()
        except BaseException:  # handed to the Deferred, as a thread would
            failure = Failure()
            return lambda: done.errback(failure)
        return lambda: done.callback(result)

    def drain(self) -> None:
        while self.jobs:
            self.step()


class FlakyDisk:
    """os.write and os.fdatasync, counted, failing while ``failure`` is set."""

    def __init__(self) -> None:
        self.failure: int | None = None  # an errno to raise
        self.partial = False  # write half the bytes before failing
        self.writes = 0
        self.syncs = 0
        self.during_sync: Callable[[], None] | None = None  # called once, mid-fsync

    def write(self, fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
        self.writes += 1
        data = b"".join(buffers)
        if self.failure is not None:
            if self.partial and len(data) > 1 and not getattr(self, "_half", False):
                self._half = True
                return os.pwrite(fd, data[: len(data) // 2], offset)
            self._half = False
            raise OSError(self.failure, os.strerror(self.failure))
        return os.pwrite(fd, data, offset)

    def sync(self, fd: int) -> None:
        self.syncs += 1
        during, self.during_sync = self.during_sync, None
        if during is not None:
            during()
        if self.failure == errno.EIO:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        os.fdatasync(fd)


def spares(directory: str) -> list[str]:
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.endswith(SPARE))


def segments(directory: str) -> list[str]:
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.endswith(SUFFIX))


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as target:
        target.seek(offset)
        byte = target.read(1)[0]
        target.seek(offset)
        target.write(bytes([byte ^ 0x20]))


def append_bytes(path: str, data: bytes) -> None:
    with open(path, "ab") as target:
        target.write(data)


def scratch(case: SynchronousTestCase) -> str:
    """A path for a spool directory (not yet created), removed after the test;
    outside the work tree, unlike trial's mktemp under pytest."""
    parent = tempfile.mkdtemp(prefix="bridge-spool-test-")
    case.addCleanup(shutil.rmtree, parent, True)
    return os.path.join(parent, "spool")
