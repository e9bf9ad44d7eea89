"""Append, read-in-order and retire throughput of the spool candidates.

Runs the candidates interleaved (A B, then B A, round after round) on a fresh
directory each time, and prints medians with the spread (min..max) over the
rounds.  Each append call is one batch: one transaction and, with ``always``,
one fsync, as the spool's group commit does.

    .venv/bin/python bench/spool/throughput.py --rounds 5 --seconds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from candidates import (
    CANDIDATES,
    bulk_payload,
    medium_payload,
    open_candidate,
    small_payload,
)

# name: (record maker, records per batch, fsync)
APPENDS: dict[str, tuple[Callable[[int], tuple[bytes, int]], int, bool]] = {
    "small c1 always": (small_payload, 1, True),
    "small c16 always": (small_payload, 16, True),
    "small c16 never": (small_payload, 16, False),
    "medium c16 always": (medium_payload, 16, True),
    "medium c16 never": (medium_payload, 16, False),
    "bulk always": (bulk_payload, 1, True),
    "bulk never": (bulk_payload, 1, False),
}
# name: (record maker, records stored first, records read and retired per batch)
DRAINS: dict[str, tuple[Callable[[int], tuple[bytes, int]], int, int]] = {
    "small read+retire": (small_payload, 50_000, 256),
    "bulk read+retire": (bulk_payload, 200, 4),
}


def measure_append(engine: str, directory: str, scenario: str, seconds: float) -> dict[str, float]:
    make, batch, fsync = APPENDS[scenario]
    store = open_candidate(engine, directory, fsync)
    records = [make(i) for i in range(batch)]
    size = sum(len(p) for p, _ in records)
    count = 0
    latencies = []
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        t0 = time.perf_counter()
        store.append(records)
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        count += batch
        if t1 >= deadline:
            break
    elapsed = time.perf_counter() - started
    store.close()
    latencies.sort()
    return {
        "records_per_s": count / elapsed,
        "mb_per_s": count * size / batch / elapsed / 1e6,
        "batch_p50_ms": latencies[len(latencies) // 2] * 1e3,
        "batch_p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
    }


def measure_drain(engine: str, directory: str, scenario: str) -> dict[str, float]:
    make, total, batch = DRAINS[scenario]
    store = open_candidate(engine, directory, False)
    step = 1000 if batch > 16 else 4
    for start in range(0, total, step):
        store.append([make(i) for i in range(start, min(total, start + step))])
    store.close()
    store = open_candidate(engine, directory, False)
    started = time.perf_counter()
    after = 0
    done = 0
    size = 0
    while True:
        rows = store.read(after, batch)
        if not rows:
            break
        store.retire([row[0] for row in rows])
        after = rows[-1][0]
        done += len(rows)
        size += sum(len(row[1]) for row in rows)
    elapsed = time.perf_counter() - started
    store.close()
    assert done == total, (done, total)
    return {"records_per_s": done / elapsed, "mb_per_s": size / elapsed / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--engines", default=",".join(CANDIDATES))
    parser.add_argument("--dir", default=None,
                        help="where the stores are made (default: a temporary directory "
                             "under /var/tmp, on the disk, not tmpfs)")
    parser.add_argument("--json", default=None, help="write the raw figures here")
    args = parser.parse_args()
    engines = args.engines.split(",")
    base = tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir or "/var/tmp")
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        for round_ in range(args.rounds):
            order = engines if round_ % 2 == 0 else engines[::-1]
            for scenario in [*APPENDS, *DRAINS]:
                for engine in order:
                    directory = os.path.join(base, f"{engine}-{round_}")
                    if scenario in APPENDS:
                        figures = measure_append(engine, directory, scenario, args.seconds)
                    else:
                        figures = measure_drain(engine, directory, scenario)
                    shutil.rmtree(directory)
                    results.setdefault(scenario, {}).setdefault(engine, []).append(figures)
                    print(f"round {round_ + 1} {scenario:20} {engine:7} "
                          + " ".join(f"{k}={v:.1f}" for k, v in figures.items()), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    print(f"| scenario | engine | records/s median (min..max) | MB/s median | "
          f"batch p50 / p99 ms (median) |  ({args.rounds} rounds)")
    print("| --- | --- | --- | --- | --- |")
    for scenario, by_engine in results.items():
        for engine, runs in by_engine.items():
            rps = [r["records_per_s"] for r in runs]
            mbs = statistics.median(r["mb_per_s"] for r in runs)
            lat = ""
            if "batch_p50_ms" in runs[0]:
                lat = (f"{statistics.median(r['batch_p50_ms'] for r in runs):.2f} / "
                       f"{statistics.median(r['batch_p99_ms'] for r in runs):.2f}")
            print(f"| {scenario} | {engine} | {statistics.median(rps):,.0f} "
                  f"({min(rps):,.0f}..{max(rps):,.0f}) | {mbs:,.1f} | {lat} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    main()
