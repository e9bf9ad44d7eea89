"""Exceptions that cross module boundaries, each knowing its HTTP answer."""

from __future__ import annotations

import math
from typing import Any, Sequence


class BridgeError(Exception):
    """An error the HTTP layer turns into ``{"error": code, "message": ...}``."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def extra(self) -> dict[str, object]:
        """Additional JSON fields for the error body."""
        return {}

    def retry_after(self) -> int | None:
        """Seconds for a ``Retry-After`` header, or None for none."""
        return None


class BodyError(BridgeError):
    """The request body breaks the line rules (400) or a limit (413)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _at_least_one_second(delay: float | None) -> int:
    if delay is None:
        return 1
    return max(1, math.ceil(delay))


class NotConnectedError(BridgeError):
    """No upstream connection is live; nothing was sent."""

    status = 503
    code = "upstream_unavailable"

    def __init__(self, message: str, retry_in: float | None) -> None:
        super().__init__(message)
        self.retry_in = retry_in

    def retry_after(self) -> int:
        return _at_least_one_second(self.retry_in)


class ShuttingDownError(BridgeError):
    """The bridge is draining and takes no new work."""

    status = 503
    code = "shutting_down"

    def retry_after(self) -> int:
        return 1


class BusyError(BridgeError):
    """Too much work in flight; retry later (429)."""

    status = 429

    def __init__(self, code: str, message: str, retry_in: float = 1.0) -> None:
        super().__init__(message)
        self.code = code
        self.retry_in = retry_in

    def retry_after(self) -> int:
        return _at_least_one_second(self.retry_in)


class UpstreamLostError(BridgeError):
    """The connection closed while replies were awaited.  ``replies`` holds
    the reply frames that had arrived (as do the two errors below)."""

    status = 502
    code = "upstream_lost"

    def __init__(self, message: str, replies: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.replies = list(replies)


class ReplyTimeoutError(BridgeError):
    """Not every reply arrived in time."""

    status = 504
    code = "reply_timeout"

    def __init__(self, message: str, replies: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.replies = list(replies)


class UpstreamReplyError(BridgeError):
    """A reply matched ``reply_error_pattern``."""

    status = 502
    code = "upstream_error"

    def __init__(self, message: str, replies: Sequence[Any]) -> None:
        super().__init__(message)
        self.replies = list(replies)




class SpoolFullError(BusyError):
    """The spool holds spool_max_bytes already; nothing was stored (429)."""

    def __init__(self, message: str, retry_in: float = 5.0) -> None:
        super().__init__("spool_full", message, retry_in)


class SpoolUnavailableError(BridgeError):
    """The disk refused (no space, I/O error, read-only): nothing was stored (503)."""

    status = 503
    code = "spool_unavailable"

    def retry_after(self) -> int:
        return 5


class UnknownUpstreamError(BridgeError):
    """No upstream of that name is configured (any more)."""

    status = 404
    code = "unknown_upstream"
