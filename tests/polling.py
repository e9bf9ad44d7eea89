"""Old name of the blocking wait helper, kept for branches that import it:
use :func:`tests.waiting.wait_until` in new code."""

from __future__ import annotations

from typing import Callable, TypeVar

from tests.waiting import DEADLINE, wait_until

T = TypeVar("T")

__all__ = ["DEADLINE", "wait_for"]


def wait_for(predicate: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Poll ``predicate`` until it returns something true, or fail after ``timeout``."""
    return wait_until(predicate, what, timeout=timeout)
