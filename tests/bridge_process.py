"""The system under test as a real process: ``python -m bridge`` (or twistd
with the project's ``.tac`` file), started with :mod:`subprocess`, its stdout
and stderr captured to files that tests read and that are printed when it
stops (pytest shows them for a failed test).

Waiting works from both worlds: ``await wait_listening()`` on the real
reactor, :meth:`BridgeProcess.block_until_listening` where no reactor runs
(``setUpClass``, plain ``unittest`` tests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.waiting import DEADLINE, wait_for, wait_until

REPO = Path(__file__).resolve().parent.parent

__all__ = ["REPO", "BridgeProcess"]

#: What the bridge logs once it listens: a URL on loopback, or a unix socket.
_LISTENING = re.compile(
    r"listening on (?:(?P<url>(?P<scheme>https?)://127\.0\.0\.1:(?P<port>\d+))/"
    r"|(?P<unix>unix:\S+))"
)


class BridgeProcess:
    """A real bridge process; stdout and stderr go to files in a temp dir.

    Its environment is the test's, without any ``BRIDGE_*`` variable, plus
    ``env``.  Use :meth:`bridge` or :meth:`twistd` to build one.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self._dir = tempfile.mkdtemp(prefix="bridge-test-")
        self.stdout_path = os.path.join(self._dir, "stdout")
        self.stderr_path = os.path.join(self._dir, "stderr")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        environment["PYTHONUNBUFFERED"] = "1"
        environment.update(env or {})
        self.port: int | None = None
        #: What its "listening on" line named: ``http(s)://127.0.0.1:PORT`` or ``unix:PATH``.
        self.address: str | None = None
        self._stopped = False
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=environment, cwd=REPO,
            )

    @classmethod
    def bridge(cls, *args: str, env: Mapping[str, str] | None = None) -> BridgeProcess:
        """``python -m bridge ARGS``."""
        return cls([sys.executable, "-m", "bridge", *args], env)

    @classmethod
    def twistd(cls, tac: str | os.PathLike[str], env: Mapping[str, str]) -> BridgeProcess:
        """``twistd -n --pidfile= -y TAC`` with this interpreter."""
        run = "from twisted.scripts.twistd import run; run()"
        return cls([sys.executable, "-c", run, "-n", "--pidfile=", "-y", os.fspath(tac)], env)

    # -- output -----------------------------------------------------------------

    def _read(self, path: str) -> str:
        try:
            with open(path, "rb") as handle:
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout(self) -> str:
        return self._read(self.stdout_path)

    def stderr(self) -> str:
        return self._read(self.stderr_path)

    def describe(self, since: int = 0) -> str:
        """Exit status and output (stdout from offset ``since``), for failures."""
        status = self.process.poll()
        state = "running" if status is None else f"exited with status {status}"
        return (
            f"--- {' '.join(self.argv[1:])}: {state}\n"
            f"--- stdout:\n{self.stdout()[since:]}--- stderr:\n{self.stderr()}---"
        )

    # -- waiting ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` behind TLS)."""
        assert self.address is not None and self.port is not None, "wait until it listens"
        return self.address

    def listening(self) -> str | None:
        """What its ``listening on`` log line names (see :attr:`address`), or
        None before it logged it; AssertionError if it exited first."""
        found = _LISTENING.search(self.stdout())
        if found:
            self.address = found.group("url") or found.group("unix")
            if found.group("port"):
                self.port = int(found.group("port"))
            return self.address
        if self.process.poll() is not None:
            raise AssertionError("the process exited before listening\n" + self.describe())
        return None

    async def wait_listening(self, timeout: float = 15.0) -> int:
        """Wait (on the reactor) until it listens on a loopback port; returns the port."""
        await wait_for(self.listening, what="the bridge to listen", timeout=timeout,
                       context=self.describe)
        assert self.port is not None, self.address
        return self.port

    def block_until_listening(self, timeout: float = DEADLINE) -> str:
        """Wait (blocking) until it listens; returns :attr:`address`."""
        return wait_until(self.listening, "the bridge to listen", timeout=timeout,
                          context=self.describe)

    def exited(self) -> bool:
        return self.process.poll() is not None

    async def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit; returns its status."""
        await wait_for(self.exited, what="the process to exit", timeout=timeout,
                       context=self.describe)
        return self.process.returncode

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    # -- stopping -----------------------------------------------------------------

    async def stop(self, timeout: float = 5.0) -> int:
        """Terminate (SIGTERM), kill after ``timeout`` s, clean up.  Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                await wait_for(self.exited, what="the process to exit after SIGTERM",
                               timeout=timeout)
            except AssertionError:
                self.process.kill()
                await wait_for(self.exited, what="the process to exit after SIGKILL",
                               timeout=timeout)
        self._finish()
        return self.process.returncode

    def stop_now(self, timeout: float = 5.0) -> int:
        """:meth:`stop` for code where no reactor runs (``tearDownClass``):
        blocks on the process's exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._finish()
        return self.process.returncode

    def _finish(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Captured by pytest and shown only when a test failed.
        print(self.describe())
        shutil.rmtree(self._dir, ignore_errors=True)
