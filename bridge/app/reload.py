"""SIGHUP: read the configuration again and apply it without dropping
connections.

* upstreams whose settings did not change keep their pools and connections;
* added upstreams start;
* removed ones stop taking work at once (their routes answer 404) and drain
  as on shutdown: what was written gets its replies, then they close;
* changed ones get a new pool, which takes the work once it is connected
  (bridge.app.handover: no moment of 503s), and the old one then drains; the
  event stream (and its subscribers) stays;
* tokens are replaced at once; so are the limits the HTTP side reads per
  request (max_inflight, request_timeout, max_body_bytes, access_log);
* a configuration that fails validation changes nothing (one log line);
  settings that need a restart (listen) are reported and left as they are.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from bridge.config import SETTINGS, Config, ConfigError

if TYPE_CHECKING:
    from bridge.app.service import BridgeService

log = Logger(namespace="bridge.reload")

#: Global settings applied at once; the others wait for a restart.
APPLIED_AT_ONCE = frozenset({
    "token", "token_file", "metrics_auth", "max_inflight", "request_timeout", "max_body_bytes",
    "access_log", "shutdown_delay", "shutdown_grace",
})
_PER_UPSTREAM = [setting.name for setting in SETTINGS if setting.per_upstream]
_GLOBAL = [setting.name for setting in SETTINGS if not setting.per_upstream]
_IGNORED = {"sources", "config_file", "named_upstreams", "default_upstream", "scoped_tokens",
            "upstreams"}


def same_upstream(old: Config, new: Config) -> bool:
    """Whether an upstream's own settings are unchanged."""
    return all(getattr(old, name) == getattr(new, name) for name in _PER_UPSTREAM)


def needs_restart(old: Config, new: Config) -> list[str]:
    """Global settings that changed and are not applied while running."""
    assert {f.name for f in fields(Config)} >= set(_GLOBAL)
    return [name for name in _GLOBAL
            if name not in APPLIED_AT_ONCE and getattr(old, name) != getattr(new, name)]


class Reloader:
    """Re-reads the configuration (``load``) and applies it to ``service``."""

    def __init__(self, service: BridgeService, load: Callable[[], Config]) -> None:
        self._service = service
        self._load = load

    def reload(self) -> Deferred[None] | None:
        """Apply the configuration read now; None when it was refused."""
        try:
            new = self._load()
        except ConfigError as error:
            log.error("configuration not reloaded, the running one stays (generation "
                      "{generation}): {error}", generation=self._service.generation,
                      error=str(error))
            return None
        except Exception as error:  # a file that vanished, a permission...
            log.error("configuration not reloaded, the running one stays (generation "
                      "{generation}): {error}", generation=self._service.generation,
                      error=f"{error.__class__.__name__}: {error}")
            return None
        return self._service.reconfigure(new)


def describe_changes(changes: dict[str, list[str]]) -> str:
    parts = [f"{what} {', '.join(names)}" for what, names in changes.items() if names]
    return "; ".join(parts) or "no upstream changed"


def summary(kept: list[str], added: list[str], changed: list[str],
            removed: list[str]) -> dict[str, Any]:
    return {"kept": kept, "added": added, "changed": changed, "removed": removed}
