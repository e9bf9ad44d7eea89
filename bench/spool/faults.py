"""Damaged files and a full disk: what each spool candidate detects and loses.

damage: a store of 2,000 one-line records and 20 of 35 kB is closed cleanly,
then its data file is truncated (to 30-95 % of its size) or has 1 or 16
random bytes flipped; a checker process reopens it and reads everything,
stepping over records whose CRC fails.  Reported per case (median over the
seeds): records still delivered, records the engine reported damaged (error,
CRC failure or set aside), records lost without a word, and whether the
checker crashed (a signal: the engine itself died on the damage).

disk full: the store lives on a 16 MiB tmpfs mounted for the purpose (needs
root; a loop device would do the same); batches of 16 x 35 kB are appended
until the engine raises, then a 2 MiB filler file is removed, one more batch
is tried, and the store is reopened and checked: every acknowledged record
must be there.

    sudo .venv/bin/python bench/spool/faults.py --seeds 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

DATA_FILE = {"sqlite": "spool.db", "lmdb": "data.mdb", "log": None}


def records() -> list[tuple[bytes, int]]:
    from candidates import medium_payload, small_payload

    out = [small_payload(i) for i in range(2000)]
    for i in range(20):
        out.insert(100 * i + 50, medium_payload(i))
    return out


def build(engine: str, directory: str) -> None:
    from candidates import open_candidate

    store = open_candidate(engine, directory, False, 1 << 30)
    data = records()
    for start in range(0, len(data), 50):
        store.append(data[start:start + 50])
    store.close()


def data_file(engine: str, directory: str) -> str:
    name = DATA_FILE[engine]
    if name is None:
        name = next(n for n in sorted(os.listdir(directory)) if n.endswith(".seg"))
    return os.path.join(directory, name)


def damage(path: str, case: str, rng: random.Random) -> None:
    size = os.path.getsize(path)
    if case == "truncate":
        os.truncate(path, int(size * rng.uniform(0.3, 0.95)))
        return
    flips = 1 if case == "flip1" else 16
    with open(path, "r+b") as target:
        for _ in range(flips):
            offset = rng.randrange(size)
            target.seek(offset)
            byte = target.read(1)[0]
            target.seek(offset)
            target.write(bytes([byte ^ (1 << rng.randrange(8))]))


def check(engine: str, directory: str) -> None:
    from candidates import Corrupt, open_candidate

    expected = {i + 1: zlib.crc32(p) for i, (p, _) in enumerate(records())}
    good = corrupt = wrong = 0
    error = None
    reported = 0
    try:
        store = open_candidate(engine, directory, False, 1 << 30)
        reported = getattr(getattr(store, "report", None), "set_aside", 0)
        after = 0
        while True:
            try:
                rows = store.read(after, 256)
            except Corrupt as bad:
                corrupt += 1
                after = bad.args[0]
                continue
            if not rows:
                break
            for record_id, payload, _ in rows:
                if expected.get(record_id) == zlib.crc32(payload):
                    good += 1
                else:
                    wrong += 1
            after = rows[-1][0]
        store.close()
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc)[:80]}"
    json.dump({"good": good, "corrupt": corrupt + reported, "wrong": wrong, "error": error},
              sys.stdout)


def med(values: list[int]) -> str:
    return f"{statistics.median(values):,.0f}" if values else "-"


def damage_table(engines: list[str], seeds: int, base: str) -> None:
    total = len(records())
    print("| engine | damage | delivered | reported damaged | lost silently | open/read "
          "errors | crashes |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for engine in engines:
        for case in ("truncate", "flip1", "flip16"):
            delivered, reported, silent = [], [], []
            errors = crashes = 0
            examples = set()
            for seed in range(seeds):
                directory = os.path.join(base, f"{engine}-{case}-{seed}")
                os.makedirs(directory)
                build(engine, directory)
                damage(data_file(engine, directory), case, random.Random(seed))
                result = subprocess.run([sys.executable, __file__, "_check", engine, directory],
                                        capture_output=True, text=True)
                shutil.rmtree(directory)
                if result.returncode != 0:
                    crashes += 1
                    examples.add(f"exit {result.returncode}")
                    continue
                report = json.loads(result.stdout)
                if report["error"]:
                    errors += 1
                    examples.add(report["error"])
                delivered.append(report["good"])
                reported.append(report["corrupt"] + report["wrong"])
                silent.append(max(0, total - report["good"] - report["corrupt"]))
            print(f"| {engine} | {case} | {med(delivered)} | {med(reported)} | {med(silent)} | "
                  f"{errors}/{seeds} | {crashes}/{seeds} |", flush=True)
            for example in sorted(examples)[:3]:
                print(f"|  | | | | | e.g. {example} | |")


def full_disk(engine: str, mount: str) -> None:
    from candidates import medium_payload, open_candidate

    filler = os.path.join(mount, "filler")
    with open(filler, "wb") as out:
        out.write(b"\0" * (2 << 20))
    directory = os.path.join(mount, "store")
    store = open_candidate(engine, directory, True, 64 << 20)
    acked: dict[int, int] = {}
    batch = [medium_payload(i) for i in range(16)]
    error = None
    while error is None:
        try:
            for record_id in store.append(batch):
                acked[record_id] = zlib.crc32(batch[0][0])
        except Exception as exc:
            error = f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:60]}"
    os.unlink(filler)
    try:
        for record_id in store.append(batch):
            acked[record_id] = zlib.crc32(batch[0][0])
        after = "appends again"
    except Exception as exc:
        after = f"still fails: {type(exc).__name__}: {str(exc)[:50]}"
    store.close()
    store = open_candidate(engine, directory, True, 64 << 20)
    found = {}
    last = 0
    while True:
        rows = store.read(last, 256)
        if not rows:
            break
        found.update((r, zlib.crc32(p)) for r, p, _ in rows)
        last = rows[-1][0]
    store.close()
    lost = sum(1 for i, c in acked.items() if found.get(i) != c)
    print(json.dumps({"engine": engine, "error": error, "after_space_freed": after,
                      "acknowledged": len(acked), "lost": lost}))


def full_table(engines: list[str]) -> None:
    print("\n| engine | error raised when full | after freeing space | acknowledged | lost |")
    print("| --- | --- | --- | ---: | ---: |")
    for engine in engines:
        mount = tempfile.mkdtemp(prefix="spool-full-")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mount]).returncode:
            print(f"| {engine} | (cannot mount a tmpfs here: run as root) | | | |")
            os.rmdir(mount)
            continue
        try:
            result = subprocess.run([sys.executable, __file__, "_full", engine, mount],
                                    capture_output=True, text=True)
        finally:
            subprocess.run(["umount", mount])
            os.rmdir(mount)
        if result.returncode != 0:
            print(f"| {engine} | crashed: exit {result.returncode} {result.stderr[-100:]} | | | |")
            continue
        r = json.loads(result.stdout)
        print(f"| {engine} | {r['error']} | {r['after_space_freed']} | {r['acknowledged']} | "
              f"{r['lost']} |", flush=True)


def main() -> None:
    if sys.argv[1:2] == ["_check"]:
        check(sys.argv[2], sys.argv[3])
        return
    if sys.argv[1:2] == ["_full"]:
        full_disk(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--engines", default="sqlite,lmdb,log")
    parser.add_argument("--only", choices=("damage", "full"), default=None)
    args = parser.parse_args()
    engines = args.engines.split(",")
    base = tempfile.mkdtemp(prefix="spool-faults-", dir="/var/tmp")
    try:
        if args.only in (None, "damage"):
            damage_table(engines, args.seeds, base)
        if args.only in (None, "full"):
            full_table(engines)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
