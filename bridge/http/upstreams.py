"""The upstreams as the HTTP side sees them: by name, each with its settings,
its pool and its event hub."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

from bridge.config import Config
from bridge.http.events import EventHub
from bridge.upstream.pool import UpstreamPool
from bridge.upstream.spool.service import SpooledSend


@dataclass(frozen=True)
class Upstream:
    """One configured upstream."""

    name: str
    config: Config
    pool: UpstreamPool
    events: EventHub
    #: With spool = "disk": where POST /send's lines go first.
    spool: SpooledSend | None = None

    @property
    def ready(self) -> bool:
        """Ready for work: connected, or with a spool, taking lines."""
        if self.spool is not None:
            return self.spool.accepting()
        return self.pool.ready()


class Upstreams(Mapping[str, Upstream]):
    """Every upstream by name, in configuration order (``default`` first).

    One registry for the whole bridge (routes, handlers, metrics, status);
    a reload replaces its contents (:meth:`replace`).
    """

    def __init__(self, upstreams: list[Upstream]) -> None:
        self._by_name = {upstream.name: upstream for upstream in upstreams}

    def replace(self, upstreams: list[Upstream]) -> None:
        self._by_name = {upstream.name: upstream for upstream in upstreams}

    def swap(self, old: Upstream, new: Upstream) -> None:
        """Put ``new`` in ``old``'s place (same name, same position)."""
        assert self._by_name.get(old.name) is old and new.name == old.name
        self._by_name = {name: new if upstream is old else upstream
                         for name, upstream in self._by_name.items()}

    def __getitem__(self, name: str) -> Upstream:
        return self._by_name[name]

    def get(self, name: str, default: Upstream | None = None) -> Upstream | None:  # type: ignore[override]
        return self._by_name.get(name, default)  # per request: Mapping.get is two calls

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def required(self) -> list[Upstream]:
        return [upstream for upstream in self._by_name.values() if upstream.config.required]
