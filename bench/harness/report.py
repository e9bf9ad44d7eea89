"""Medians, ratios, issue 6's targets and the table on stdout."""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from harness.common import LABELS, TARGETS, Run


def brief(run: Run) -> str:
    m = run.metrics
    if run.error and not m:
        return "error"
    parts = []
    if "req_per_s" in m:
        parts.append(f"{m['req_per_s']:.0f} req/s")
    if run.scenario in ("send_bulk", "memory") and "lines_per_s" in m:
        parts.append(f"{m['lines_per_s']:.0f} lines/s")
    if "latency_us" in m:
        parts.append(f"p99 {m['latency_us']['99'] / 1000:.2f} ms")
    if "peak_rss_kb" in m:
        parts.append(f"RSS {m['peak_rss_kb'] / 1024:.0f} MB")
    if run.accounting is not None:
        if run.scenario == "resp":
            parts.append("answers and INCRs exact" if run.accounting["ok"]
                         else "ACCOUNTING MISMATCH")
        else:
            parts.append("lines ok" if run.accounting["ok"] else "LINES MISMATCH")
    return ", ".join(parts)


# -- summary -----------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def metric(run: Run, name: str) -> float | None:
    m = run.metrics
    if name in ("p50", "p99"):
        latency = m.get("latency_us")
        return None if latency is None else latency[name[1:]]
    if name == "non_2xx_share":
        answered = m.get("requests")
        return None if not answered else (answered - m["acked"]) / answered
    if name in ("raw_p50", "raw_p99"):
        latency = m.get("raw_latency_us")
        return None if latency is None else latency[name[5:]]
    return m.get(name)


def summarize(runs: list[Run]) -> dict[str, Any]:
    groups: dict[tuple[str, int], dict[str, list[Run]]] = {}
    for run in runs:
        if run.error is None:
            groups.setdefault((run.scenario, run.concurrency), {}).setdefault(
                run.target, []).append(run)
    names = ("req_per_s", "lines_per_s", "body_mb_per_s", "p50", "p99", "raw_p50", "raw_p99",
             "cpu_us_per_request", "server_cpu_cores", "server_kernel_share", "wrk_cpu_cores",
             "sink_cpu_cores", "other_cpu_cores", "peak_rss_kb", "non_2xx_share")
    summary: dict[str, Any] = {}
    for (scenario, concurrency), targets in groups.items():
        entry: dict[str, Any] = {"targets": {}, "ratios": {}}
        for target, target_runs in targets.items():
            medians = {}
            for name in names:
                value = median([metric(r, name) for r in target_runs])  # type: ignore[misc]
                if value is not None:
                    medians[name] = value
            medians["rounds"] = len(target_runs)
            entry["targets"][target] = medians
        bridge_runs = {r.round: r for r in targets.get("bridge", [])}
        rate = "lines_per_s" if scenario in ("send_bulk", "spool_bulk") else "req_per_s"
        if scenario.startswith("spool_"):
            entry["ratios"] = spool_ratios(targets, bridge_runs, rate)
            summary[f"{scenario}/c{concurrency}"] = entry
            continue
        for other, other_runs in targets.items():
            if other == "bridge":
                continue
            per_round = paired_ratios(bridge_runs, other_runs, rate)
            # CPU per request is less sensitive to what else runs on the machine.
            efficiency = paired_ratios(other_runs, bridge_runs, "cpu_us_per_request")
            if per_round:
                entry["ratios"][f"bridge/{other}"] = {
                    "metric": rate, "per_round": per_round, "median": median(per_round)}
                if efficiency:
                    entry["ratios"][f"bridge/{other}"]["cpu_efficiency"] = {
                        "per_round": efficiency, "median": median(efficiency)}
        if scenario == "request" and "bridge" in targets and "direct" in targets:
            added: dict[str, Any] = {}
            for p in ("50", "99"):
                per_round = []
                for r in targets["direct"]:
                    b = bridge_runs.get(r.round)
                    if b is None:
                        continue
                    key = "raw_latency_us" if "raw_latency_us" in b.metrics else "latency_us"
                    per_round.append(round(b.metrics[key][p] - r.metrics["latency_us"][p], 1))
                added[f"p{p}_us"] = {"per_round": per_round, "median": median(per_round)}
            entry["added_latency"] = added
        summary[f"{scenario}/c{concurrency}"] = entry
    return summary


def paired_ratios(top: dict[int, Run] | list[Run], bottom: dict[int, Run] | list[Run],
                  name: str) -> list[float]:
    """``name`` of ``top`` / of ``bottom``, round by round (rounds both have)."""
    tops = top if isinstance(top, dict) else {r.round: r for r in top}
    bottoms = bottom if isinstance(bottom, dict) else {r.round: r for r in bottom}
    ratios = []
    for number in sorted(bottoms):
        upper, lower = tops.get(number), bottoms[number]
        if upper is None:
            continue
        a, b = metric(upper, name), metric(lower, name)
        if a and b:
            ratios.append(round(a / b, 3))
    return ratios


def spool_ratios(targets: dict[str, list[Run]], bridge_runs: dict[int, Run],
                 rate: str) -> dict[str, Any]:
    """Spooled / unspooled throughput, round by round (issue 12)."""
    ratios: dict[str, Any] = {}
    for other, other_runs in targets.items():
        if other == "bridge":
            continue
        per_round = paired_ratios(other_runs, bridge_runs, rate)
        if per_round:
            ratios[f"{other}/bridge"] = {"metric": rate, "per_round": per_round,
                                         "median": median(per_round)}
    return ratios


def evaluate_targets(summary: dict[str, Any], runs: list[Run]) -> list[dict[str, Any]]:
    """Issue 6's targets, from the medians of this run."""
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: str, passed: bool | None) -> None:
        checks.append({"target": name, "value": value, "goal": goal,
                       "met": passed if value is not None else None})

    small = summary.get("send_small/c16")
    if small:
        ratio = small["ratios"].get("bridge/peer", {}).get("median")
        add("small /send c16: bridge/peer req/s", ratio, ">= 1.0",
            ratio is not None and ratio >= 1.0)
        t = small["targets"]
        if "bridge" in t and "peer" in t:
            b, p = t["bridge"].get("p99"), t["peer"].get("p99")
            add("small /send c16: bridge p99 - peer p99 (us)",
                None if b is None or p is None else round(b - p, 1), "<= 0",
                b is not None and p is not None and b <= p)
    bulk = summary.get(next((k for k in summary if k.startswith("send_bulk/")), ""), None)
    if bulk:
        ratio = bulk["ratios"].get("bridge/peer", {}).get("median")
        add("bulk /send: bridge/peer lines/s", ratio, ">= 1.0", ratio is not None and ratio >= 1.0)
        ratio = bulk["ratios"].get("bridge/raw", {}).get("median")
        add("bulk /send: bridge/raw ceiling lines/s", ratio, ">= 0.5",
            ratio is not None and ratio >= 0.5)
    for key in sorted((k for k in summary if k.startswith("resp/")),
                      key=lambda k: int(k.split("/c")[1])):
        ratio = summary[key]["ratios"].get("bridge/redis_peer", {}).get("median")
        add(f"resp /request {key.split('/')[1]}: bridge/redis-py peer req/s", ratio, ">= 1.0",
            ratio is not None and ratio >= 1.0)
    for key in sorted((k for k in summary if k.startswith("named/")),
                      key=lambda k: int(k.split("/c")[1])):
        ratio = summary[key]["ratios"].get("bridge/named")
        if ratio is None:
            continue
        # The ratios are bridge/named: the named route's share is their inverse.
        share = median([round(1 / r, 3) for r in ratio["per_round"] if r])
        add(f"/u/NAME/send {key.split('/')[1]}: req/s vs /send", share, ">= 0.95",
            share is not None and share >= 0.95)
        efficiency = ratio.get("cpu_efficiency")
        if efficiency:
            # Their cost over ours: CPU per request of /u/NAME/send over /send's.
            cost = efficiency["median"]
            add(f"/u/NAME/send {key.split('/')[1]}: CPU per request vs /send", cost,
                "<= 1.05", cost is not None and cost <= 1.05)
    request = summary.get("request/c1")
    if request and "added_latency" in request:
        added = request["added_latency"]["p50_us"]["median"]
        add("/request c1: added p50 latency (us)", added, "< 300",
            added is not None and added < 300)
    for key, goal in (("spool_small/c16", 0.3), ("spool_bulk/c", 0.5)):
        entry = next((summary[k] for k in summary if k.startswith(key)), None)
        if entry:
            ratio = entry["ratios"].get("spool_always/bridge", {}).get("median")
            add(f"{key.split('/')[0].replace('_', ' /send ')}: spooled (always)/unspooled",
                ratio, f">= {goal}", ratio is not None and ratio >= goal)
    spooled = [r for r in runs if r.scenario == "spool_memory" and "peak_rss_kb" in r.metrics]
    if spooled:
        peak = round(max(r.metrics["peak_rss_kb"] for r in spooled) / 1024, 1)
        add("peak RSS with 1 GB spooled (MB)", peak, "< 64", peak < 64)
    rss = [r.metrics["peak_rss_kb"] for r in runs
           if r.target == "bridge" and r.scenario in ("send_small", "send_bulk", "request")
           and "peak_rss_kb" in r.metrics]
    if rss:
        peak = round(max(rss) / 1024, 1)
        add("peak RSS scenarios 1-3 (MB)", peak, "< 64", peak < 64)
    memory = [r for r in runs if r.scenario == "memory" and "peak_rss_kb" in r.metrics]
    if memory:
        peak = round(max(r.metrics["peak_rss_kb"] for r in memory) / 1024, 1)
        add("peak RSS scenario 4, slow upstream (MB)", peak, "< 150", peak < 150)
    return checks


def fmt_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}" if value else "0"


def fmt(value: float | None, scale: float = 1.0, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value / scale:,.{digits}f}"


def print_table(summary: dict[str, Any], runs: list[Run], checks: list[dict[str, Any]],
                args: argparse.Namespace) -> None:
    out = sys.stdout
    titles = {
        "send_small": "1. POST /send, one 32-byte line per request",
        "send_bulk": "2. POST /send, 1000 lines of 32 bytes per request",
        "request": "3. POST /request, one line per request, replying upstream",
        "resp": "5. POST /request to redis-server, GET k and INCR n alternating, "
                "bridge --reply-framing resp vs aiohttp + redis-py (hiredis)",
        "named": "6. POST /send vs POST /u/NAME/send, one 32-byte line per request, "
                 "the same bridge with its upstream unnamed or named (issue 11)",
        "spool_small": "7. POST /send, one 32-byte line per request, unspooled vs spooled "
                       "(--spool disk)",
        "spool_bulk": "8. POST /send, 1000 lines of 32 bytes per request, unspooled vs spooled",
    }
    print(f"\nMedians of {args.rounds} interleaved round(s), {args.duration:g} s per run. "
          "Latency from wrk (corrected for coordinated omission); CPU = server process "
          "utime+stime per answered request; cores = the server's CPU use; other = CPU "
          "used by processes outside the benchmark (noise on a shared machine); non-2xx = "
          "share of answers that were not 2xx (429, 503...).", file=out)
    for scenario in ("send_small", "send_bulk", "request", "resp", "named", "spool_small",
                     "spool_bulk"):
        keys = [k for k in summary if k.startswith(scenario + "/")]
        if not keys:
            continue
        print(f"\n{titles[scenario]}", file=out)
        header = (f"  {'conc':>4}  {'target':<20} {'req/s':>9} {'lines/s':>11} {'MB/s':>7} "
                  f"{'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} {'RSS MB':>7} {'cores':>5} "
                  f"{'other':>5} {'non-2xx':>7}")
        print(header, file=out)
        for key in sorted(keys, key=lambda k: int(k.split("/c")[1])):
            entry = summary[key]
            concurrency = key.split("/c")[1]
            for target in TARGETS[scenario]:
                t = entry["targets"].get(target)
                if t is None:
                    continue
                p50 = t.get("raw_p50") if target == "direct" else t.get("p50")
                p99 = t.get("raw_p99") if target == "direct" else t.get("p99")
                print(f"  {concurrency:>4}  {LABELS[target]:<20} {fmt(t.get('req_per_s')):>9} "
                      f"{fmt(t.get('lines_per_s')):>11} {fmt(t.get('body_mb_per_s'), 1, 1):>7} "
                      f"{fmt(p50, 1000, 2):>7} {fmt(p99, 1000, 2):>7} "
                      f"{fmt(t.get('cpu_us_per_request'), 1, 0):>10} "
                      f"{fmt(t.get('peak_rss_kb'), 1024, 1):>7} "
                      f"{fmt(t.get('server_cpu_cores'), 1, 2):>5} "
                      f"{fmt(t.get('other_cpu_cores'), 1, 2):>5} "
                      f"{fmt_share(t.get('non_2xx_share')):>7}", file=out)
            for name, ratio in entry["ratios"].items():
                rounds = " ".join(f"{r:.2f}" for r in ratio["per_round"])
                line = (f"        {name} ({ratio['metric']}): median {ratio['median']:.2f}  "
                        f"per round: {rounds}")
                efficiency = ratio.get("cpu_efficiency")
                if efficiency:
                    line += (f";  requests per CPU second: median {efficiency['median']:.2f}  "
                             "per round: " + " ".join(f"{r:.2f}" for r in
                                                      efficiency["per_round"]))
                print(line, file=out)
            for name, added in entry.get("added_latency", {}).items():
                rounds = " ".join(f"{r:.0f}" for r in added["per_round"])
                print(f"        added {name.replace('_us', '')} latency over direct TCP: median "
                      f"{fmt(added['median'], 1, 0)} us  per round: {rounds}", file=out)
    memory = [r for r in runs if r.scenario == "memory"]
    for run in memory:
        m = run.metrics
        print("\n4. Memory: POST /send of 1000-line bodies at concurrency "
              f"{run.concurrency} to an upstream reading {args.slow_rate / 1e6:g} MB/s", file=out)
        if not m:
            print(f"  error: {run.error}", file=out)
            continue
        print(f"  offered {m['offered_bytes'] / 1e6:,.0f} MB in {m['seconds']:.1f} s; answers: "
              f"202 x {m['acked']}, 429 x {m['status_429']}, 503 x {m['status_503']}, other x "
              f"{m['status_other']}; peak RSS {m['peak_rss_kb'] / 1024:.1f} MB "
              f"(at the end {m.get('rss_at_end_kb', 0) / 1024:.1f} MB)", file=out)
    for run in (r for r in runs if r.scenario == "spool_memory"):
        m = run.metrics
        print("\n9. Memory with the spool: POST /send of 1000-line bodies at concurrency "
              f"{run.concurrency} to an upstream reading 1 kB/s, then at full speed", file=out)
        if not m:
            print(f"  error: {run.error}", file=out)
            continue
        print(f"  offered {m['offered_bytes'] / 1e6:,.0f} MB in {m['seconds']:.1f} s; 202 x "
              f"{m['acked']}, 429 x {m['status_429']}, 503 x {m['status_503']}; spooled "
              f"{(m.get('spooled_bytes') or 0) / 1e6:,.0f} MB; delivered in "
              f"{m.get('delivery_seconds', 0):.1f} s; peak RSS "
              f"{m['peak_rss_kb'] / 1024:.1f} MB (while filling "
              f"{m.get('peak_rss_filling_kb', 0) / 1024:.1f} MB)", file=out)
    rss = [r for r in runs if r.target == "bridge" and "peak_rss_kb" in r.metrics]
    if rss:
        worst = max(rss, key=lambda r: r.metrics["peak_rss_kb"])
        print(f"\nBridge peak RSS over all runs: {worst.metrics['peak_rss_kb'] / 1024:.1f} MB "
              f"({worst.scenario} c{worst.concurrency})", file=out)
    resp = [r for r in runs if r.scenario == "resp" and r.accounting is not None]
    if resp:
        bad_resp = [r for r in resp if not r.accounting["ok"]]  # type: ignore[index]
        incrs = sum(r.accounting["sink_lines"] for r in resp)  # type: ignore[index]
        print("\nresp accounting (every answer 200 of the right shape; Redis' counter == "
              f"INCR answers): {len(resp) - len(bad_resp)} of {len(resp)} runs exact, "
              f"{incrs:,} INCRs counted", file=out)
    accounted = [r for r in runs if r.accounting is not None and r.scenario != "resp"]
    bad = [r for r in accounted if not r.accounting["ok"]]  # type: ignore[index]
    total = sum(r.accounting["sink_lines"] for r in accounted)  # type: ignore[index]
    if accounted or not resp:
        print("\nLine accounting (sink count == 202 answers x lines per request):", file=out)
        print(f"  {len(accounted) - len(bad)} of {len(accounted)} runs exact, "
              f"{total:,} lines counted", file=out)
    for r in bad:
        a = r.accounting
        assert a is not None
        print(f"  MISMATCH {r.scenario} c{r.concurrency} {r.target} round {r.round}: acked "
              f"{a['acked_lines']}, sink {a['sink_lines']} ({a['difference']:+d})", file=out)
    for r in resp:
        a = r.accounting
        assert a is not None
        if not a["ok"]:
            print(f"  MISMATCH resp c{r.concurrency} {r.target} round {r.round}: "
                  f"{a['non_200']} not 200, {a['bad_bodies']} unexpected bodies, INCR answers "
                  f"{a['acked_lines']}, Redis {a['sink_lines']} ({a['difference']:+d})",
                  file=out)
    errors = [r for r in runs if r.error]
    for r in errors:
        print(f"  ERROR {r.scenario} c{r.concurrency} {r.target} round {r.round}: "
              f"{(r.error or '').splitlines()[0]}", file=out)
    if checks:
        print("\nTargets of issues 6, 9 and 11:", file=out)
        for check in checks:
            state = {True: "met", False: "NOT MET", None: "n/a"}[check["met"]]
            value = check["value"]
            shown = "-" if value is None else (f"{value:.2f}" if isinstance(value, float)
                                              else str(value))
            print(f"  {check['target']:<48} {shown:>9}  (goal {check['goal']})  {state}",
                  file=out)
