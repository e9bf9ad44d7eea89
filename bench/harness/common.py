"""Paths, constants and the record of one run."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
LUA = BENCH / "wrk" / "lines.lua"
RESP_LUA = BENCH / "wrk" / "resp.lua"
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
LINE_BYTES = 32
BULK_LINES = 1000
#: What the resp scenario stores under the key "k" (what GET k answers).
RESP_VALUE = "bench-value-0123456789abcdef-001"
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/")

SCENARIOS = ("send_small", "send_bulk", "request", "resp", "named", "memory", "spool_small",
             "spool_bulk", "spool_memory")
#: The upstream name of the named scenario's bridge (POST /u/NAME/send).
NAMED_UPSTREAM = "bench"
#: Spooled bridges (issue 12): --spool disk with this --spool-fsync.
SPOOL_TARGETS = {"spool_always": "always", "spool_never": "never"}

# What each scenario runs, in the order of a round (A B A B ...).
TARGETS = {
    "send_small": ("bridge", "peer", "klein", "web"),
    "send_bulk": ("bridge", "peer", "raw"),
    "request": ("bridge", "direct"),
    "resp": ("bridge", "redis_peer"),
    "named": ("bridge", "named"),
    "memory": ("bridge",),
    "spool_small": ("bridge", "spool_always", "spool_never"),
    "spool_bulk": ("bridge", "spool_always", "spool_never"),
    "spool_memory": ("spool_never",),
}

LABELS = {
    "bridge": "bridge",
    "peer": "aiohttp peer",
    "klein": "Klein ceiling",
    "web": "twisted.web ceiling",
    "raw": "raw Twisted writer",
    "direct": "direct TCP",
    "redis_peer": "aiohttp+redis-py peer",
    "named": "bridge, /u/NAME/send",
    "spool_always": "spool, fsync always",
    "spool_never": "spool, fsync never",
}


class BenchError(Exception):
    """A run could not be carried out (a process did not start, wrk failed...)."""


@dataclass
class Run:
    scenario: str
    target: str
    round: int
    concurrency: int
    metrics: dict[str, Any] = field(default_factory=dict)
    accounting: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and (self.accounting is None or self.accounting["ok"])

    def as_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "target": self.target, "round": self.round,
                "concurrency": self.concurrency, "ok": self.ok, "error": self.error,
                "accounting": self.accounting, **self.metrics}
