"""py-spy the bridge under load and summarise where the time goes."""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.common import BULK_LINES, PYTHON, RESULTS, Run
from harness.procs import RedisControl
from harness.wrk import run_wrk

if TYPE_CHECKING:
    from harness.scenarios import Bench


def profile(bench: Bench) -> int:
    """py-spy the bridge under one scenario (``--profile-scenario``, at
    ``--profile-concurrency``) and print where its CPU time goes."""
    args = bench.args
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    scenario = args.profile_scenario
    path = "/request" if scenario in ("request", "resp") else "/send"
    lines = BULK_LINES if scenario in ("send_bulk", "spool_bulk") else 1
    target = args.profile_target or ("spool_always" if scenario.startswith("spool_")
                                     else "bridge")
    RESULTS.mkdir(parents=True, exist_ok=True)
    collapsed = RESULTS / f"profile-{scenario}-c{args.profile_concurrency}.txt"
    run = Run(scenario, target, 1, args.profile_concurrency)
    with contextlib.ExitStack() as stack:
        control: Any = None
        sink = None
        framing = None
        if scenario == "request":
            upstream = stack.enter_context(bench.replier())
        elif scenario == "resp":
            upstream, sink = bench.redis()
            control = stack.enter_context(contextlib.closing(RedisControl(upstream)))
            framing = "resp"
        else:
            upstream, control, sink = stack.enter_context(bench.sink())
        port, server = stack.enter_context(bench.server(
            target, upstream, control if scenario != "resp" else None, framing))
        script, extra = bench.script(run)
        run_wrk(args, port, path, run.concurrency, lines, 1.0, script=script,
                extra=extra)  # warm-up
        if args.profile_perf:
            switches = _context_switches(server.pid)
            spy = subprocess.Popen(
                ["perf", "record", "-F", "499", "-g", "-p", str(server.pid), "-o",
                 str(collapsed) + ".perf", "--", "sleep", str(math.ceil(args.duration))],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.3)
            bench.measure_http(run, port, server, path, lines, control, sink, warmup=0)
            spy.communicate(timeout=60)
            switches = [b - a for a, b in zip(switches, _context_switches(server.pid),
                                               strict=True)]
            answered = run.metrics.get("acked") or 1
            print(f"perf data: {collapsed}.perf; {run.metrics.get('req_per_s', 0):.0f} req/s "
                  f"over {args.duration:g} s; context switches per answered request: "
                  f"{switches[0] / answered:.2f} voluntary, {switches[1] / answered:.2f} "
                  f"involuntary")
            return 0
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.pid), "--rate", str(args.profile_rate),
             "--duration", str(math.ceil(args.duration)), "--format", "raw",
             "--output", str(collapsed), "--nonblocking", "--nolineno",
             *(["--gil"] if args.profile_gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.3)
        bench.measure_http(run, port, server, path, lines, control, sink, warmup=0)
        _, spy_errors = spy.communicate(timeout=60)
    m = run.metrics
    print(f"bridge under {scenario} c{run.concurrency} while profiled (py-spy slows it a "
          f"little): {m.get('req_per_s', 0):.0f} req/s, {m.get('cpu_us_per_request', 0):.0f} "
          f"CPU us per request, server CPU {m.get('server_cpu_cores', 0):.2f} cores, "
          f"other processes {m.get('other_cpu_cores', 0):.2f} cores"
          + ("" if run.accounting is None else
             f", line accounting {'ok' if run.accounting['ok'] else 'FAILED'}"))
    if run.error:
        print(f"run error: {run.error}", file=sys.stderr)
    if spy.returncode != 0 or not collapsed.exists():
        print(f"py-spy failed ({spy.returncode}): {spy_errors.decode(errors='replace')}",
              file=sys.stderr)
        return 1
    print_profile(collapsed, args.profile_top)
    print(f"\ncollapsed stacks (flamegraph.pl / speedscope input): {collapsed}")
    return 0


def _context_switches(pid: int) -> list[int]:
    """Voluntary and involuntary context switches of every thread of ``pid``."""
    totals = [0, 0]
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                totals[0] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                totals[1] += int(line.split()[1])
    return totals


def print_profile(collapsed: Path, top: int) -> None:
    self_counts: dict[str, int] = {}
    total_counts: dict[str, int] = {}
    module_counts: dict[str, int] = {}
    callers: dict[str, dict[str, int]] = {}
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + count
        if len(frames) > 1:
            by_caller = callers.setdefault(leaf, {})
            by_caller[frames[-2]] = by_caller.get(frames[-2], 0) + count
        for frame in set(frames):
            total_counts[frame] = total_counts.get(frame, 0) + count
        module = module_of(leaf)
        module_counts[module] = module_counts.get(module, 0) + count
    if not samples:
        print("no samples")
        return
    print(f"\n{samples} busy samples (idle time excluded).  Self time by package or module:")
    for name, count in sorted(module_counts.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {count / samples:6.1%}  {name}")
    print(f"\nTop {top} functions by self time (C calls count in their Python caller; "
          "'<-' is the main caller):")
    for name, count in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]:
        caller = max(callers.get(name, {"": 0}).items(), key=lambda kv: kv[1])[0]
        via = f"  <- {caller}" if caller else ""
        print(f"  {count / samples:6.1%}  {name}{via}")
    print(f"\nTop {top} functions by inclusive time (frames under 90% of samples, so the "
          "reactor loop itself is left out):")
    inner = [(n, c) for n, c in total_counts.items() if c < 0.9 * samples]
    for name, count in sorted(inner, key=lambda kv: -kv[1])[:top]:
        print(f"  {count / samples:6.1%}  {name}")


def module_of(frame: str) -> str:
    """'func (twisted/logger/_file.py)' -> 'twisted/logger'; bridge modules stay whole."""
    match = re.search(r"\((.*?)(?::\d+)?\)$", frame)
    path = match.group(1) if match else frame
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    parts = path.split("/")
    if parts[0] == "bridge" or len(parts) == 1:
        return path
    if parts[0] == "twisted" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0]
