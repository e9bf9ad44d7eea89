"""Waiting for a condition from plain (non-reactor) tests: poll with a deadline."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

DEADLINE = 30.0


def wait_for(predicate: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Poll ``predicate`` until it returns something true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)  # polling interval, not synchronisation
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
