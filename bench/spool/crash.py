"""kill -9 during writes: is every acknowledged record still there, intact?

For each candidate and fsync mode: a writer process appends batches of
records (mostly ~40 bytes, sometimes up to 1 MiB) and retires the oldest now
and then, printing each acknowledgement only after ``append`` returned (and
each retire before it starts).  The harness SIGKILLs it at a random moment, reopens the
store in a checker process (a crash of the engine itself is then seen, not
suffered), and checks that every acknowledged, unretired record is there
with the payload it was given, and that no record is damaged.  Twenty times
in a row on the same directory.

    .venv/bin/python bench/spool/crash.py --kills 20 --engines sqlite,lmdb,log
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def payload_for(record_id: int, size: int) -> bytes:
    seed = b"%d." % record_id
    return (seed * (size // len(seed) + 1))[:size]


def writer(engine: str, directory: str, fsync: bool, seed: int) -> None:
    from candidates import open_candidate

    store = open_candidate(engine, directory, fsync, 1 << 30)
    rng = random.Random(seed)
    retired_to = 0
    out = sys.stdout
    while True:
        batch = []
        for _ in range(rng.randint(1, 32)):
            rare = rng.random() < 0.2
            batch.append(rng.choice((40, 2000, 65536, 1 << 20)) if rare else 40)
        start = store.last_id() + 1
        ids = store.append([(payload_for(start + i, s), 1) for i, s in enumerate(batch)])
        out.write("".join(f"A {i} {s}\n" for i, s in zip(ids, batch, strict=True)))
        out.flush()
        if rng.random() < 0.1:
            rows = store.read(retired_to, rng.randint(1, 64))
            if rows:
                # Announced before retiring: a record may be gone once retire starts.
                out.write("".join(f"R {row[0]}\n" for row in rows))
                out.flush()
                store.retire([row[0] for row in rows])
                retired_to = rows[-1][0]


def check(engine: str, directory: str) -> None:
    from candidates import open_candidate

    found = {}
    error = None
    try:
        store = open_candidate(engine, directory, False, 1 << 30)
        after = 0
        while True:
            rows = store.read(after, 512)
            if not rows:
                break
            for record_id, payload, _lines in rows:
                found[record_id] = zlib.crc32(payload)
            after = rows[-1][0]
        store.close()
    except Exception as exc:  # reported, not hidden
        error = f"{type(exc).__name__}: {exc}"
    json.dump({"found": found, "error": error}, sys.stdout)


def trial(engine: str, directory: str, fsync: bool, rng: random.Random,
          acked: dict[int, int], retired: set[int]) -> dict[str, object]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "_writer", engine, directory, "1" if fsync else "0",
         str(rng.randrange(1 << 30))],
        stdout=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    time.sleep(rng.uniform(0.05, 1.0))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join()
    for line in lines:
        kind, *rest = line.split()
        if kind == "A":
            acked[int(rest[0])] = int(rest[1])
        elif kind == "R":
            retired.add(int(rest[0]))
    result = subprocess.run([sys.executable, __file__, "_check", engine, directory],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return {"crashed": result.returncode, "stderr": result.stderr[-300:]}
    report = json.loads(result.stdout)
    found = {int(k): v for k, v in report["found"].items()}
    missing = [i for i in acked if i not in retired and i not in found]
    # A retired id may be taken again by an engine that numbers from its last key.
    wrong = [i for i, size in acked.items() if i in found and i not in retired
             and found[i] != zlib.crc32(payload_for(i, size))]
    return {"acked": len(acked), "found": len(found), "missing": len(missing),
            "wrong": len(wrong), "error": report["error"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_writer":
        writer(sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_check":
        check(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--engines", default="sqlite,lmdb,log")
    parser.add_argument("--modes", default="always,never")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = tempfile.mkdtemp(prefix="spool-crash-", dir="/var/tmp")
    print("| engine | fsync | kills | acknowledged | missing | wrong | open errors | checker "
          "crashes |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    try:
        for engine in args.engines.split(","):
            for mode in args.modes.split(","):
                directory = os.path.join(base, f"{engine}-{mode}")
                os.makedirs(directory)
                acked: dict[int, int] = {}
                retired: set[int] = set()
                missing = wrong = errors = crashes = 0
                for _ in range(args.kills):
                    result = trial(engine, directory, mode == "always", rng, acked, retired)
                    if "crashed" in result:
                        crashes += 1
                        print(f"  checker crashed: {result}", file=sys.stderr)
                        continue
                    missing = max(missing, int(result["missing"]))  # type: ignore[call-overload]
                    wrong = max(wrong, int(result["wrong"]))  # type: ignore[call-overload]
                    if result["error"]:
                        errors += 1
                        print(f"  open/read error: {result['error']}", file=sys.stderr)
                print(f"| {engine} | {mode} | {args.kills} | {len(acked):,} | {missing} | "
                      f"{wrong} | {errors} | {crashes} |", flush=True)
                shutil.rmtree(directory)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
