"""Log output: one line per event, as text or as JSON, filtered by level."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import IO, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
    textFileLogObserver,
)
from zope.interface import implementer

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}

# Twisted internals that only add noise at info level.
_QUIET_NAMESPACES = ("twisted.application._client_service", "twisted.internet.protocol")


@implementer(ILogObserver)
class JSONLineObserver:
    """``{"time", "level", "namespace", "event", ...fields}`` per line."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": level.name if level is not None else "info",
            "namespace": event.get("log_namespace", ""),
            "event": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        for key, value in event.items():
            if key.startswith("log_") or key in record or key in ("format", "message",
                                                                  "isError", "system", "time"):
                continue
            record[key] = value if isinstance(value, (str, int, float, bool, type(None))) else (
                repr(value)
            )
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()


class LogBudget:
    """At most ``per_second`` log lines a second for one kind of event that
    others can trigger at will (malformed requests, error replies to /send
    lines); the rest are only counted in ``suppressed``."""

    def __init__(self, clock: IReactorTime, per_second: int = 3) -> None:
        self._clock = clock
        self._per_second = per_second
        self._second = -1
        self._logged = 0
        self.suppressed = 0

    def allow(self) -> bool:
        """Whether one more line may be logged now (counted when not)."""
        second = int(self._clock.seconds())
        if second != self._second:
            self._second, self._logged = second, 0
        if self._logged >= self._per_second:
            self.suppressed += 1
            return False
        self._logged += 1
        return True


def _text_observer(stream: IO[str]) -> ILogObserver:
    observer: ILogObserver = textFileLogObserver(stream)
    return observer


def make_observer(stream: IO[str], level: str, log_format: str) -> ILogObserver:
    """The observer for ``--log-level`` and ``--log-format``."""
    base = JSONLineObserver(stream) if log_format == "json" else _text_observer(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    if level != "debug":
        for namespace in _QUIET_NAMESPACES:
            predicate.setLogLevelForNamespace(namespace, LogLevel.warn)
    return FilteringLogObserver(base, [predicate])


__all__ = ["JSONLineObserver", "LogBudget", "formatEventAsClassicLogText", "make_observer"]
