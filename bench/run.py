"""Benchmark the bridge against an aiohttp peer and the limits of its stack (issue 6).

Everything runs on 127.0.0.1 with ephemeral ports and fresh processes for
every run: the real ``bridge`` process, a line-counting sink upstream
(bench/sink.py), a replying upstream (bench/replier.py), wrk with
bench/wrk/lines.lua as the load generator, and the baselines it is compared
with in the same run, interleaved round by round (A B A B):

* peer:     bench/peers/aiohttp_bridge.py, the bridge a user could write instead;
* ceilings: a Klein app and a plain twisted.web resource that read the body
            and answer (no upstream), and a raw Twisted client writing
            pre-framed lines to the sink as fast as it can (bench/ceilings.py).

Scenarios (``--scenarios``):

  send_small  POST /send, one 32-byte line per request, concurrency 1, 16, 64
  send_bulk   POST /send, 1000 lines of 32 bytes per request, concurrency 16
  request     POST /request, one line per request, concurrency 1 and 16, against
              the replier; added latency over a direct TCP round trip
  resp        POST /request to a real redis-server (GET k and INCR n alternating),
              concurrency 1 and 16: the bridge with --reply-framing resp against
              bench/peers/aiohttp_redis.py (aiohttp + redis-py's asyncio client with
              hiredis), both in front of the same redis-server (issue 9)
  named       POST /send against POST /u/NAME/send (issue 11), one 32-byte line per
              request, concurrency 16: the same bridge and sink, the upstream
              unnamed (--upstream ADDR) or named (--upstream bench=ADDR)
  memory      >= 1 GB offered by clients to an upstream reading about 1 MB/s
  spool_small POST /send of one line, concurrency 16: the bridge unspooled, and
              with --spool disk and --spool-fsync always / never (issue 12)
  spool_bulk  the same with 1000-line bodies
  spool_memory 1 GB spooled behind an upstream reading 1 kB/s, then delivered at
              full speed: peak RSS, every line counted

Every /send run checks the line accounting: the lines the sink counted must
equal the 202 answers times the lines per request; any difference is printed
and makes the exit status 1; so does every resp run where an answer was not
a 200 of the expected shape or Redis' counter did not grow by exactly the INCR
answers.  Results go to stdout (a table) and to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from harness.common import LABELS, RESULTS, ROOT, SCENARIOS
from harness.profiling import profile
from harness.report import evaluate_targets, print_table, summarize
from harness.scenarios import Bench


def environment(args: argparse.Namespace) -> dict[str, Any]:
    def version(module: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(module)
        except Exception:
            return None

    def command(argv: list[str]) -> str | None:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT,
                                 check=False)
        except OSError:
            return None
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) \
            else None

    cpu = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": version("twisted"),
        "klein": version("klein"),
        "aiohttp": version("aiohttp"),
        "redis_py": version("redis"),
        "hiredis": version("hiredis"),
        "redis_server": command(["redis-server", "--version"]),
        "wrk": command([args.wrk, "-v"]),
        "git_commit": command(["git", "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(command(["git", "status", "--porcelain", "bridge"])),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "bridge_sources": sources_digest(),
    }


def sources_digest() -> str:
    """A digest of bridge/*.py: tells whether the code changed during a run."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "bridge").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def name_list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)}; choose from {', '.join(choices)}")
        return names
    return parse


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__,
        epilog="A full run takes about 20 minutes on a 2-core machine; --quick about 3.",
        formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 round, 3 s runs, 0.5 s warm-up, 200 MB offered in "
                        "the memory scenario (overrides those options)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds of load per measured run")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of unmeasured load before each run (0 = none)")
    parser.add_argument("--scenarios", type=name_list(SCENARIOS), default=",".join(SCENARIOS),
                        help="comma-separated: " + ",".join(SCENARIOS))
    parser.add_argument("--targets", type=name_list(tuple(LABELS)), default=",".join(LABELS),
                        help="comma-separated subset of " + ",".join(LABELS))
    parser.add_argument("--small-concurrency", type=int_list, default="1,16,64",
                        help="connections for send_small")
    parser.add_argument("--bulk-concurrency", type=int, default=16)
    parser.add_argument("--request-concurrency", type=int_list, default="1,16")
    parser.add_argument("--resp-concurrency", type=int_list, default="1,16",
                        help="connections for resp")
    parser.add_argument("--named-concurrency", type=int_list, default="16",
                        help="connections for named")
    parser.add_argument("--memory-concurrency", type=int, default=16)
    parser.add_argument("--offered-mb", type=float, default=1000.0,
                        help="MB of request bodies offered in the memory scenario")
    parser.add_argument("--slow-rate", type=float, default=1e6,
                        help="bytes/s the slow upstream reads in the memory scenario")
    parser.add_argument("--memory-cap", type=float, default=120.0,
                        help="seconds after which the memory scenario stops offering")
    parser.add_argument("--spool-memory-cap", type=float, default=600.0,
                        help="seconds after which the spool_memory scenario stops offering")
    parser.add_argument("--bridge-arg", action="append", default=[],
                        help="extra bridge option, e.g. --bridge-arg=--no-access-log "
                        "(repeatable)")
    parser.add_argument("--bridge-command", default=None,
                        help="command that starts the bridge (default: .venv/bin/bridge), "
                        "e.g. to compare another checkout: "
                        "'/other/checkout/.venv/bin/python -m bridge'")
    parser.add_argument("--wrk", default="wrk", help="wrk executable")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (-t)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep every process log in bench/results/logs (failed runs' "
                        "logs are always kept)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the benchmark: py-spy the bridge under one scenario "
                        "(--profile-scenario, --profile-concurrency, --duration) and print the "
                        "top costs")
    parser.add_argument("--profile-scenario", default="send_small",
                        choices=("send_small", "send_bulk", "request", "resp",
                                 "spool_small", "spool_bulk"))
    parser.add_argument("--profile-concurrency", type=int, default=16)
    parser.add_argument("--profile-target", choices=("bridge", "spool_always", "spool_never"),
                        help="what to profile (default: spool_always for spool_* scenarios, "
                        "else bridge)")
    parser.add_argument("--profile-perf", action="store_true",
                        help="record with Linux perf instead of py-spy (C and kernel time)")
    parser.add_argument("--profile-gil", action="store_true",
                        help="sample only the thread holding the GIL (Python CPU, not waits)")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 0.5
        args.offered_mb = min(args.offered_mb, 200.0)
        args.memory_cap = min(args.memory_cap, 30.0)
        args.spool_memory_cap = min(args.spool_memory_cap, 30.0)
    if shutil.which(args.wrk) is None:
        print(f"{args.wrk} not found: apt-get install wrk (make bench does it)", file=sys.stderr)
        return 2
    bench = Bench(args)
    try:
        if args.profile:
            return profile(bench)
        env = environment(args)
        plan = bench.plan()
        print(f"bench: {len(plan)} runs, {args.rounds} round(s) of {args.duration:g} s; "
              f"bridge {env['git_commit']}{' (modified)' if env['git_dirty'] else ''}, "
              f"load average {' '.join(env['loadavg_at_start'])}", flush=True)
        started = time.monotonic()
        for run in plan:
            bench.execute(run)
        elapsed = time.monotonic() - started
        env["bridge_sources_changed_during_run"] = sources_digest() != env["bridge_sources"]
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        bench.close()
        bench.launcher.stop_all()
    summary = summarize(bench.runs)
    checks = evaluate_targets(summary, bench.runs)
    print_table(summary, bench.runs, checks, args)
    ok = all(run.ok for run in bench.runs)
    document = {
        "environment": env,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "elapsed_s": round(elapsed, 1),
        "ok": ok,
        "summary": summary,
        "targets": checks,
        "runs": [run.as_json() for run in bench.runs],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1) + "\n")
    if env["bridge_sources_changed_during_run"]:
        print("\nWARNING: bridge/ changed while the benchmark ran; bridge runs measured "
              "different code", file=sys.stderr)
    print(f"\n{len(bench.runs)} runs in {elapsed / 60:.1f} min; results in {args.output}")
    if not ok:
        print("FAILED: line accounting mismatch or run error (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
