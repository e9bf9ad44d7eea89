"""Processes the harness starts, and what /proc says about them."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.common import PAGE_KB, PYTHON, ROOT, BenchError


def bridge_command() -> list[str]:
    script = Path(PYTHON).with_name("bridge")
    return [str(script)] if script.exists() else [PYTHON, "-m", "bridge"]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; only this process."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


class Launcher:
    """Starts processes with their output in a log file; stops what it started."""

    def __init__(self, logs: Path, keep_logs: bool) -> None:
        self.logs = logs
        self.keep_logs = keep_logs
        self.started: list[Process] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], ready: re.Pattern[str],
              timeout: float = 30.0) -> tuple[Process, re.Match[str]]:
        handle, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=self.logs)
        os.close(handle)
        log = Path(path)
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT)
        process = Process(name, popen, log)
        self.started.append(process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = ready.search(log.read_text(errors="replace"))
            if match:
                return process, match
            if popen.poll() is not None:
                break
            time.sleep(0.02)
        process.stop(1)
        raise BenchError(f"{name} did not start ({' '.join(argv)}):\n{process.tail()}")

    def stop(self, process: Process, grace: float = 10.0, failed: bool = False) -> int | None:
        status = process.stop(grace)
        if process in self.started:
            self.started.remove(process)
        if not failed and not self.keep_logs:
            with contextlib.suppress(OSError):
                process.log.unlink()
        return status

    def stop_all(self) -> None:
        for process in list(reversed(self.started)):
            self.stop(process, grace=3, failed=True)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a multi-process server counts as a whole)."""
    pids, index = [pid], 0
    while index < len(pids):
        current = pids[index]
        index += 1
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    pids.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return pids


def cpu_ticks(pids: list[int], kernel_only: bool = False) -> int:
    """utime + stime (or stime alone) of ``pids``, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[12]) + (0 if kernel_only else int(fields[11]))
    return total


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * PAGE_KB
        except OSError:
            continue
    return total


def machine_busy_ticks() -> int:
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


class Sampler:
    """Samples the RSS of a process tree in a thread; keeps the peak and a series."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.series: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        last_series = -1.0
        while not self._stop.is_set():
            rss = rss_kb(process_tree(self.pid))
            self.peak_kb = max(self.peak_kb, rss)
            now = time.monotonic() - self._started
            if now - last_series >= 0.5:
                self.series.append((round(now, 2), rss))
                last_series = now
            self._stop.wait(self.interval)

    def stop(self) -> int:
        """Peak RSS in kB: the sampled peak or the kernel's high-water mark."""
        self._stop.set()
        self._thread.join()
        return max(self.peak_kb, status_kb(self.pid, "VmHWM"))


class SinkControl:
    """The sink's control socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.stream = self.sock.makefile("rwb")

    def command(self, text: str) -> dict[str, int]:
        self.stream.write(text.encode() + b"\n")
        self.stream.flush()
        line = self.stream.readline()
        if not line:
            raise BenchError("the sink's control connection closed")
        answer: dict[str, int] = json.loads(line)
        return answer

    def stats(self) -> dict[str, int]:
        return self.command("STATS")

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


class RedisControl:
    """A plain RESP client for the harness's own look at Redis (never timed).

    ``stats()["lines"]`` is the value of the counter the resp scenario
    increments, so that it accounts like the sink's line count."""

    def __init__(self, port: int, counter: str = "n") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.stream = self.sock.makefile("rwb")
        self.counter = counter

    def command(self, *args: str) -> bytes | int | None:
        """One command (as a RESP array, so values may hold blanks); its reply."""
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.stream.write(b"".join(parts))
        self.stream.flush()
        line = self.stream.readline()
        kind, rest = line[:1], line[1:].rstrip(b"\r\n")
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            if int(rest) < 0:
                return None
            data = self.stream.read(int(rest) + 2)
            return data[:-2]
        raise BenchError(f"unexpected reply from redis-server: {line!r}")

    def stats(self) -> dict[str, int]:
        value = self.command("GET", self.counter)
        return {"lines": int(value) if value is not None else 0}

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def free_port() -> int:
    """A TCP port free on the loopback address right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def http_status(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()
