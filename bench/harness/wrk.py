"""wrk runs that end with every line-carrying request answered."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from harness.common import LINE_BYTES, LUA, BenchError


def run_wrk(args: argparse.Namespace, port: int, path: str, connections: int, lines: int,
            duration: float, max_requests: int = 0, drain_timeout: float = 15.0,
            raw_latency: bool = False, script: Path = LUA,
            extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One wrk run that ends with every line-carrying request answered.

    ``script`` is lines.lua or a script taking the same arguments, followed by
    ``extra`` (resp.lua: the value of the key it GETs).  Returns wrk's WRKJSON
    summary plus ``wrk_cpu_s`` and ``drained`` (False when the requests in
    flight were not all answered within drain_timeout).
    """
    threads = max(1, min(args.wrk_threads, connections))
    deadline = time.time() + duration
    hard = int(duration + drain_timeout + 30)
    argv = [args.wrk, f"-t{threads}", f"-c{connections}", f"-d{hard}s", "--timeout", "10s",
            "-s", str(script), f"http://127.0.0.1:{port}", "--", path, str(lines),
            str(LINE_BYTES), f"{deadline:.6f}", str(max_requests), "1" if raw_latency else "0",
            *extra]
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    stopped: list[str] = []
    all_stopped = threading.Event()
    stderr_lines: list[str] = []

    def read_stderr() -> None:
        assert popen.stderr is not None
        for raw in popen.stderr:
            text = raw.decode(errors="replace").rstrip()
            if text.startswith("STOPPED"):
                stopped.append(text)
                if len(stopped) == threads:
                    all_stopped.set()
            else:
                stderr_lines.append(text)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    end = time.monotonic() + duration + drain_timeout
    drained = False
    while reader.is_alive() and time.monotonic() < end:
        if all_stopped.wait(0.05):
            drained = True
            break
    # wrk sleeps for -d whatever its threads do; SIGINT ends the sleep.  (os.kill,
    # not send_signal, which would reap the process before wait4 can read its usage.)
    os.kill(popen.pid, signal.SIGINT)
    assert popen.stdout is not None
    stdout = popen.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(popen.pid, 0)
    popen.returncode = os.waitstatus_to_exitcode(status)
    reader.join(5)
    match = re.search(r"^WRKJSON (\{.*\})$", stdout, re.MULTILINE)
    if popen.returncode != 0 or match is None:
        raise BenchError(f"wrk failed ({popen.returncode}): {' '.join(argv)}\n{stdout}\n"
                         + "\n".join(stderr_lines))
    result: dict[str, Any] = json.loads(match.group(1))
    result["wrk_cpu_s"] = usage.ru_utime + usage.ru_stime
    result["drained"] = drained
    result["threads"] = threads
    result["stderr"] = stderr_lines[:5]  # e.g. resp.lua's first unexpected answers
    return result
