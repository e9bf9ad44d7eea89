"""The runs of each scenario: start the processes, load, measure, account."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from typing import Any, Iterator

from harness.common import (
    BENCH,
    BULK_LINES,
    CLK_TCK,
    LINE_BYTES,
    LISTENING,
    LUA,
    NAMED_UPSTREAM,
    PYTHON,
    RESP_LUA,
    RESP_VALUE,
    RESULTS,
    SPOOL_TARGETS,
    TARGETS,
    BenchError,
    Run,
)
from harness.procs import (
    Launcher,
    Process,
    RedisControl,
    Sampler,
    SinkControl,
    bridge_command,
    cpu_ticks,
    free_port,
    http_status,
    machine_busy_ticks,
    process_tree,
    rss_kb,
    wait_for,
)
from harness.report import brief
from harness.wrk import run_wrk


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.launcher = Launcher(RESULTS / "logs", args.keep_logs)
        self.runs: list[Run] = []
        self.current: Run | None = None  # the run in progress: its logs are kept if it fails
        self._redis: tuple[int, Process, str] | None = None  # port, process, its --dir
        self._spool_dirs: list[str] = []  # the spooled bridges' directories (removed after)

    def close(self) -> None:
        """Stop what outlives single runs (the redis-server of the resp scenario)."""
        if self._redis is not None:
            _port, process, directory = self._redis
            self._redis = None
            self.launcher.stop(process, grace=5)
            shutil.rmtree(directory, ignore_errors=True)

    # -- process helpers ------------------------------------------------------------

    @contextlib.contextmanager
    def sink(self, rate: float = 0) -> Iterator[tuple[int, SinkControl, Process]]:
        argv = [PYTHON, str(BENCH / "sink.py")]
        if rate:
            argv += ["--rate", str(rate)]
        process, match = self.launcher.start(
            "sink", argv, re.compile(r"sink data=(\d+) control=(\d+)"))
        control = SinkControl(int(match.group(2)))
        try:
            yield int(match.group(1)), control, process
        finally:
            control.close()
            self.launcher.stop(process, grace=2, failed=self._failing())

    @contextlib.contextmanager
    def replier(self) -> Iterator[int]:
        process, match = self.launcher.start(
            "replier", [PYTHON, str(BENCH / "replier.py"), "serve"],
            re.compile(r"replier data=(\d+)"))
        try:
            yield int(match.group(1))
        finally:
            self.launcher.stop(process, grace=2, failed=self._failing())

    def redis(self) -> tuple[int, Process]:
        """The one redis-server of the resp scenario: started by the first resp
        run, shared by every resp run (bridge and peer alike), stopped by close().
        Loopback, no persistence, its own port; never the system service."""
        if self._redis is not None and self._redis[1].popen.poll() is None:
            return self._redis[0], self._redis[1]
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server not found: apt-get install redis-server "
                             "(make bench does it)")
        directory = tempfile.mkdtemp(prefix="bench-redis-")
        port = free_port()
        process, _ = self.launcher.start(
            "redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", directory],
            re.compile(r"Ready to accept connections"))
        self._redis = (port, process, directory)
        control = RedisControl(port)
        try:
            control.command("SET", "k", RESP_VALUE)
            control.command("SET", "n", "0")
        finally:
            control.close()
        return port, process

    def server_argv(self, target: str, upstream: int | None,
                    framing: str | None = None) -> list[str]:
        if target == "bridge" or target in SPOOL_TARGETS:
            command = (shlex.split(self.args.bridge_command) if self.args.bridge_command
                       else bridge_command())
            extra = ["--reply-framing", framing] if framing else []
            if target in SPOOL_TARGETS:
                directory = tempfile.mkdtemp(prefix="bench-spool-")
                self._spool_dirs.append(directory)
                extra += ["--spool", "disk", "--spool-dir", directory + "/spool",
                          "--spool-fsync", SPOOL_TARGETS[target]]
            return [*command, "--listen", "127.0.0.1:0",
                    "--upstream", f"127.0.0.1:{upstream}", *extra, *self.args.bridge_arg]
        if target == "named":
            # The same bridge with its one upstream named: only the route differs.
            command = (shlex.split(self.args.bridge_command) if self.args.bridge_command
                       else bridge_command())
            return [*command, "--listen", "127.0.0.1:0",
                    "--upstream", f"{NAMED_UPSTREAM}=127.0.0.1:{upstream}",
                    *self.args.bridge_arg]
        if target == "peer":
            return [PYTHON, str(BENCH / "peers" / "aiohttp_bridge.py"),
                    "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}"]
        if target == "redis_peer":
            return [PYTHON, str(BENCH / "peers" / "aiohttp_redis.py"),
                    "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}"]
        if target in ("klein", "web"):
            return [PYTHON, str(BENCH / "ceilings.py"), target]
        raise ValueError(target)

    @contextlib.contextmanager
    def server(self, target: str, upstream: int | None,
               control: SinkControl | None,
               framing: str | None = None) -> Iterator[tuple[int, Process]]:
        process, match = self.launcher.start(
            target, self.server_argv(target, upstream, framing), LISTENING)
        port = int(match.group(1))
        failed = True
        try:
            if control is not None and not wait_for(
                    lambda: control.stats()["active"] >= 1, 15):
                raise BenchError(f"{target} did not connect to the sink:\n{process.tail()}")
            if (target in ("bridge", "named") or target in SPOOL_TARGETS) and not wait_for(
                    lambda: http_status(port, "/readyz") == 200, 15):
                raise BenchError(f"the bridge never became ready:\n{process.tail()}")
            yield port, process
            failed = False
        finally:
            self.launcher.stop(process, failed=failed or self._failing())
            for directory in self._spool_dirs:
                shutil.rmtree(directory, ignore_errors=True)
            self._spool_dirs.clear()

    def _failing(self) -> bool:
        return self.current is not None and not self.current.ok

    # -- measuring -------------------------------------------------------------------------

    def measure_http(self, run: Run, port: int, server: Process, path: str, lines: int,
                     control: SinkControl | RedisControl | None, sink: Process | None,
                     max_requests: int = 0, duration: float | None = None,
                     drain_timeout: float = 15.0, account_timeout: float = 15.0,
                     raw_latency: bool = False, warmup: float | None = None) -> None:
        args = self.args
        duration = args.duration if duration is None else duration
        warmup = args.warmup if warmup is None else warmup
        script, script_args = self.script(run)
        if warmup > 0:
            # The upstream's count before the warm-up: 0 for a fresh sink, not
            # for the redis-server shared by the resp runs.
            start = control.stats()["lines"] if control is not None else 0
            warm = run_wrk(args, port, path, run.concurrency, lines, warmup, script=script,
                           extra=script_args)
            if control is not None:
                self.account(run, control, start, warm, lines, account_timeout, "warmup")
                if run.accounting is not None and not run.accounting["ok"]:
                    return
        before = control.stats()["lines"] if control is not None else 0
        pids = process_tree(server.pid)
        extra = [sink.pid] if sink is not None else []
        cpu0, busy0, sink0 = cpu_ticks(pids), machine_busy_ticks(), cpu_ticks(extra)
        kernel0 = cpu_ticks(pids, kernel_only=True)
        wall0 = time.monotonic()
        result = run_wrk(args, port, path, run.concurrency, lines, duration, max_requests,
                         drain_timeout, raw_latency, script=script, extra=script_args)
        wall = time.monotonic() - wall0
        pids = process_tree(server.pid)
        cpu = (cpu_ticks(pids) - cpu0) / CLK_TCK
        kernel = (cpu_ticks(pids, kernel_only=True) - kernel0) / CLK_TCK
        sink_cpu = (cpu_ticks(extra) - sink0) / CLK_TCK
        busy = (machine_busy_ticks() - busy0) / CLK_TCK
        seconds = result["duration_us"] / 1e6
        acked = result["s2xx"]
        answered = result["answered"] + result["noops"]
        m = run.metrics
        m.update({
            "seconds": round(seconds, 3),
            "requests": result["answered"],
            "acked": acked,
            "status_429": result["s429"],
            "status_503": result["s503"],
            "status_other": result["sother"],
            "noop_requests": result["noops"],
            "socket_errors": result["errors"],
            "drained": result["drained"],
            "req_per_s": round(acked / seconds, 1),
            "lines_per_request": lines,
            "lines_per_s": round(acked * lines / seconds, 1),
            "body_mb_per_s": round(acked * result["body_bytes"] / seconds / 1e6, 2),
            "offered_bytes": result["issued"] * result["body_bytes"],
            "latency_us": result["latency_us"],
            "cpu_us_per_request": round(cpu / max(answered, 1) * 1e6, 1),
            "server_cpu_cores": round(cpu / wall, 3),
            "server_kernel_share": round(kernel / cpu, 3) if cpu else None,
            "wrk_cpu_cores": round(result["wrk_cpu_s"] / wall, 3),
            "sink_cpu_cores": round(sink_cpu / wall, 3),
            "other_cpu_cores": round(max(0.0, busy - cpu - sink_cpu - result["wrk_cpu_s"])
                                     / wall, 3),
        })
        if "raw_latency_us" in result:
            m["raw_latency_us"] = result["raw_latency_us"]
        if "incr_ok" in result:
            m.update({key: result[key] for key in (
                "get_issued", "incr_issued", "get_ok", "incr_ok", "bad_bodies")})
        if control is not None:
            self.account(run, control, before, result, lines, account_timeout, "measured")
        if not result["drained"]:
            run.error = ("wrk's requests in flight were not all answered in time "
                         f"({result['issued']} issued, {result['answered']} answered)")

    @staticmethod
    def script(run: Run) -> tuple[Any, tuple[str, ...]]:
        """The wrk script of a run and its extra arguments."""
        if run.scenario == "resp":
            return RESP_LUA, (RESP_VALUE,)
        return LUA, ()

    def account(self, run: Run, control: SinkControl | RedisControl, before: int,
                result: dict[str, Any], lines: int, timeout: float, phase: str) -> None:
        """/send: the sink's count == 202 answers x lines per request.  resp: every
        answer a 200 of the expected shape, and Redis' counter grew by exactly
        the INCR answers (acked_lines / sink_lines hold those two counts)."""
        resp = "incr_ok" in result
        expected = result["incr_ok"] if resp else result["s2xx"] * lines
        counted = [0]

        def arrived() -> bool:
            counted[0] = control.stats()["lines"] - before
            return counted[0] >= expected

        wait_for(arrived, timeout, 0.05)
        # Anything beyond the expected count arrives right after: look once more.
        time.sleep(0.1)
        counted[0] = control.stats()["lines"] - before
        ok = counted[0] == expected and result["drained"]
        accounting = {"phase": phase, "acked_requests": result["s2xx"],
                      "lines_per_request": lines, "acked_lines": expected,
                      "sink_lines": counted[0], "difference": counted[0] - expected,
                      "ok": ok}
        if resp:
            answers_ok = (result["s2xx"] == result["answered"] == result["issued"]
                          and result["bad_bodies"] == 0
                          and result["get_ok"] == result["get_issued"]
                          and result["incr_ok"] == result["incr_issued"])
            accounting.update({
                "what": "INCR answers vs Redis' counter", "answered": result["answered"],
                "issued": result["issued"], "non_200": result["answered"] - result["s2xx"],
                "bad_bodies": result["bad_bodies"], "get_issued": result["get_issued"],
                "get_ok": result["get_ok"], "incr_issued": result["incr_issued"],
                "incr_ok": result["incr_ok"], "answers_ok": answers_ok,
                "ok": ok and answers_ok})
            if result.get("stderr"):
                accounting["wrk_stderr"] = result["stderr"]
        if run.accounting is None or phase == "measured" or not ok:
            run.accounting = accounting

    # -- scenarios ---------------------------------------------------------------------------

    def http_send_run(self, run: Run, lines: int) -> None:
        needs_upstream = run.target in ("bridge", "peer", "named", *SPOOL_TARGETS)
        path = f"/u/{NAMED_UPSTREAM}/send" if run.target == "named" else "/send"
        with contextlib.ExitStack() as stack:
            control = sink = None
            upstream = None
            if needs_upstream:
                upstream, control, sink = stack.enter_context(self.sink())
            port, server = stack.enter_context(self.server(run.target, upstream, control))
            sampler = Sampler(server.pid)
            try:
                # A spool delivers after the 202: give it time to catch up.
                timeout = 120.0 if run.target in SPOOL_TARGETS else 15.0
                self.measure_http(run, port, server, path, lines, control, sink,
                                  account_timeout=timeout)
            finally:
                run.metrics["peak_rss_kb"] = sampler.stop()

    def raw_run(self, run: Run) -> None:
        with self.sink() as (upstream, control, _sink):
            before = control.stats()["lines"]
            out = subprocess.run(
                [PYTHON, str(BENCH / "ceilings.py"), "raw", "--port", str(upstream),
                 "--duration", str(self.args.duration), "--lines-per-write", str(BULK_LINES),
                 "--line-bytes", str(LINE_BYTES)],
                capture_output=True, text=True, timeout=self.args.duration + 60, check=False)
            if out.returncode != 0:
                raise BenchError(f"raw writer failed: {out.stdout}{out.stderr}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            wait_for(lambda: control.stats()["lines"] - before >= result["lines"], 15, 0.05)
            counted = control.stats()["lines"] - before
            run.metrics.update({
                "seconds": round(result["seconds"], 3),
                "lines_per_s": round(result["lines"] / result["seconds"], 1),
                "body_mb_per_s": round(result["lines"] * (LINE_BYTES + 1)
                                       / result["seconds"] / 1e6, 2),
            })
            run.accounting = {"phase": "measured", "acked_lines": result["lines"],
                              "sink_lines": counted, "difference": counted - result["lines"],
                              "ok": counted == result["lines"]}

    def request_run(self, run: Run) -> None:
        with self.replier() as upstream:
            if run.target == "direct":
                out = subprocess.run(
                    [PYTHON, str(BENCH / "replier.py"), "probe", "--port", str(upstream),
                     "--concurrency", str(run.concurrency), "--duration",
                     str(self.args.duration)],
                    capture_output=True, text=True, timeout=self.args.duration + 60,
                    check=False)
                if out.returncode != 0:
                    raise BenchError(f"probe failed: {out.stdout}{out.stderr}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                run.metrics.update({
                    "seconds": round(result["seconds"], 3),
                    "req_per_s": round(result["rate"], 1),
                    "latency_us": {"50": result["p50_us"], "90": result["p90_us"],
                                   "99": result["p99_us"], "mean": result["mean_us"]},
                    "raw_latency_us": {"50": result["p50_us"], "90": result["p90_us"],
                                       "99": result["p99_us"]},
                })
                return
            with self.server("bridge", upstream, None) as (port, server):
                sampler = Sampler(server.pid)
                try:
                    self.measure_http(run, port, server, "/request", 1, None, None,
                                      raw_latency=run.concurrency == 1)
                finally:
                    run.metrics["peak_rss_kb"] = sampler.stop()

    def resp_run(self, run: Run) -> None:
        """POST /request of GET k / INCR n to the shared redis-server, through the
        bridge (--reply-framing resp) or the aiohttp + redis-py peer."""
        upstream, redis = self.redis()
        control = RedisControl(upstream)
        try:
            framing = "resp" if run.target == "bridge" else None
            with self.server(run.target, upstream, None, framing) as (port, server):
                sampler = Sampler(server.pid)
                try:
                    self.measure_http(run, port, server, "/request", 1, control, redis,
                                      raw_latency=run.concurrency == 1)
                finally:
                    run.metrics["peak_rss_kb"] = sampler.stop()
        finally:
            control.close()

    def memory_run(self, run: Run) -> None:
        args = self.args
        body = BULK_LINES * (LINE_BYTES + 1)
        threads = max(1, min(args.wrk_threads, run.concurrency))
        per_thread = math.ceil(args.offered_mb * 1e6 / body / threads)
        with self.sink(rate=args.slow_rate) as (upstream, control, sink):
            with self.server("bridge", upstream, control) as (port, server):
                sampler = Sampler(server.pid)
                try:
                    self.measure_http(
                        run, port, server, "/send", BULK_LINES, None, sink,
                        max_requests=per_thread, duration=args.memory_cap,
                        drain_timeout=60, warmup=0)
                finally:
                    run.metrics["peak_rss_kb"] = sampler.stop()
                    run.metrics["rss_series_kb"] = sampler.series
                run.metrics["rss_at_end_kb"] = rss_kb(process_tree(server.pid))
                # Let the sink read at full speed so the accounting completes quickly.
                control.command("RATE 0")
                acked = run.metrics["acked"]
                expected = acked * BULK_LINES
                wait_for(lambda: control.stats()["lines"] >= expected, 120, 0.1)
                time.sleep(0.2)
                counted = control.stats()["lines"]
                run.accounting = {"phase": "measured", "acked_requests": acked,
                                  "lines_per_request": BULK_LINES, "acked_lines": expected,
                                  "sink_lines": counted, "difference": counted - expected,
                                  "ok": counted == expected}
                run.metrics["slow_rate_bytes_per_s"] = args.slow_rate

    def spool_memory_run(self, run: Run) -> None:
        """1 GB of 1000-line bodies spooled (fsync never) behind an upstream reading 1 kB/s,
        then delivered at full speed: peak RSS throughout, every line counted."""
        args = self.args
        body = BULK_LINES * (LINE_BYTES + 1)
        threads = max(1, min(args.wrk_threads, run.concurrency))
        per_thread = math.ceil(args.offered_mb * 1e6 / body / threads)
        with self.sink(rate=1000) as (upstream, control, sink):
            with self.server(run.target, upstream, control) as (port, server):
                sampler = Sampler(server.pid)
                try:
                    self.measure_http(
                        run, port, server, "/send", BULK_LINES, None, sink,
                        max_requests=per_thread, duration=args.spool_memory_cap,
                        drain_timeout=60, warmup=0)
                    run.metrics["spooled_bytes"] = spooled_bytes(port)
                    run.metrics["peak_rss_filling_kb"] = max(
                        (kb for _, kb in sampler.series), default=0)
                    control.command("RATE 0")
                    acked = run.metrics["acked"]
                    expected = acked * BULK_LINES
                    delivered = time.monotonic()
                    wait_for(lambda: control.stats()["lines"] >= expected, 300, 0.1)
                    run.metrics["delivery_seconds"] = round(time.monotonic() - delivered, 1)
                    time.sleep(0.2)
                finally:
                    run.metrics["peak_rss_kb"] = sampler.stop()
                    run.metrics["rss_series_kb"] = sampler.series
                counted = control.stats()["lines"]
                run.accounting = {"phase": "measured", "acked_requests": acked,
                                  "lines_per_request": BULK_LINES, "acked_lines": expected,
                                  "sink_lines": counted, "difference": counted - expected,
                                  "ok": counted == expected}

    def execute(self, run: Run) -> None:
        label = f"{run.scenario} c{run.concurrency} {run.target} round {run.round}"
        print(f"  {label} ...", end="", flush=True)
        started = time.monotonic()
        self.current = run
        try:
            if run.scenario in ("send_small", "named"):
                self.http_send_run(run, 1)
            elif run.scenario == "send_bulk":
                if run.target == "raw":
                    self.raw_run(run)
                else:
                    self.http_send_run(run, BULK_LINES)
            elif run.scenario == "request":
                self.request_run(run)
            elif run.scenario == "resp":
                self.resp_run(run)
            elif run.scenario == "memory":
                self.memory_run(run)
            elif run.scenario == "spool_small":
                self.http_send_run(run, 1)
            elif run.scenario == "spool_bulk":
                self.http_send_run(run, BULK_LINES)
            elif run.scenario == "spool_memory":
                self.spool_memory_run(run)
        except BenchError as error:
            run.error = str(error)
        self.runs.append(run)
        print(f" {brief(run)} ({time.monotonic() - started:.0f} s)", flush=True)
        if run.accounting is not None and not run.accounting["ok"]:
            a = run.accounting
            if "incr_ok" in a:
                print(f"    ACCOUNTING FAILED ({a['phase']}): {a['answered']} of {a['issued']} "
                      f"answered, {a['non_200']} not 200, {a['bad_bodies']} unexpected "
                      f"bodies; GET {a['get_ok']} of {a['get_issued']} right, INCR "
                      f"{a['incr_ok']} of {a['incr_issued']} right; Redis counted "
                      f"{a['sink_lines']} INCRs (difference {a['difference']:+d})", flush=True)
                for text in a.get("wrk_stderr", []):
                    print(f"    wrk: {text}", flush=True)
            else:
                print(f"    LINE ACCOUNTING FAILED ({a['phase']}): acked {a['acked_lines']} "
                      f"lines, sink counted {a['sink_lines']} (difference "
                      f"{a['difference']:+d})", flush=True)
        if run.error:
            print(f"    ERROR: {run.error}", flush=True)
        if not run.ok:
            print(f"    process logs kept in {self.launcher.logs}", flush=True)

    def plan(self) -> list[Run]:
        args = self.args
        runs: list[Run] = []
        for scenario in args.scenarios:
            if scenario == "memory":
                runs.append(Run("memory", "bridge", 1, args.memory_concurrency))
                continue
            if scenario == "spool_memory":
                # fsync never: the disk's fsync rate is not what this measures.
                runs.append(Run("spool_memory", "spool_never", 1, args.memory_concurrency))
                continue
            concurrencies = {"send_small": args.small_concurrency,
                             "send_bulk": [args.bulk_concurrency],
                             "spool_small": [16],
                             "spool_bulk": [args.bulk_concurrency],
                             "request": args.request_concurrency,
                             "resp": args.resp_concurrency,
                             "named": args.named_concurrency}[scenario]
            targets = [t for t in TARGETS[scenario] if t in args.targets]
            for concurrency in concurrencies:
                for number in range(1, args.rounds + 1):
                    for target in targets:
                        runs.append(Run(scenario, target, number, concurrency))
        return runs


def spooled_bytes(port: int) -> int | None:
    """What the bridge's /status says its spool holds now."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/status")
        spool = json.loads(connection.getresponse().read())["spool"]
        return None if spool is None else int(spool["bytes"])
    finally:
        connection.close()
