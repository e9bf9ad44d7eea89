"""One process per spool directory, enforced by an OS file lock.

``flock`` is released by the kernel when the process dies, kill -9
included, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os

NAME = "lock"


class SpoolLockedError(Exception):
    """Another process holds the spool directory.  ``str()`` is the one line
    the command line prints before exiting with status 2."""


def claim(directory: str) -> DirectoryLock:
    """Create ``directory`` if needed and lock it: SpoolLockedError when
    another process holds it, OSError when it cannot be used."""
    os.makedirs(directory, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot create files in it", directory)
    return DirectoryLock.acquire(directory)


class DirectoryLock:
    """Held from :meth:`acquire` until :meth:`release` (or the process ends)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: str) -> DirectoryLock:
        fd = os.open(os.path.join(directory, NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SpoolLockedError(
                f"the spool directory {directory} is in use by another process (pid {holder}); "
                "each upstream needs its own spool_dir"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None
