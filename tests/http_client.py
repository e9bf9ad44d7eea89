"""HTTP over real loopback sockets, for tests on the real reactor: treq
through a private connection pool (never treq's global one), closed by
:meth:`BridgeClient.close` in cleanup.  ``GET /events`` is read with
:class:`tests.events_client.RawEventClient` instead, byte for byte."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet.ssl import Certificate
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers

reactor: Any = _reactor

__all__ = ["BridgeClient", "Reply"]


@dataclass(frozen=True)
class Reply:
    """A complete HTTP response."""

    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class BridgeClient:
    """treq through a private connection pool; :meth:`close` it in cleanup.

    ``trust``: for an ``https`` base URL, the certificate to trust (only it).
    """

    def __init__(self, base_url: str, *, persistent: bool = True,
                 trust: Certificate | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.pool = HTTPConnectionPool(reactor, persistent=persistent)
        # Keep every connection of a burst of concurrent requests in the pool,
        # so that close() waits until each one is closed (a connection the
        # pool closes itself would still be closing when trial checks).
        self.pool.maxPersistentPerHost = 128
        self.pool.retryAutomatically = False
        if trust is None:
            agent = Agent(reactor, pool=self.pool)
        else:
            policy = BrowserLikePolicyForHTTPS(trustRoot=trust)
            agent = Agent(reactor, contextFactory=policy, pool=self.pool)
        self.treq = HTTPClient(agent)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        data = body.encode("utf-8") if isinstance(body, str) else body
        response = await self.treq.request(
            method, self.base_url + path, data=data,
            headers=Headers({k: [v] for k, v in (headers or {}).items()}),
        )
        content = await response.content()
        return Reply(response.code, response.headers, content)

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return await self.request("GET", path, headers=headers)

    async def post(
        self, path: str, body: bytes | str, headers: Mapping[str, str] | None = None
    ) -> Reply:
        return await self.request("POST", path, body, headers)

    async def close(self) -> None:
        """Close every pooled connection; returns once they are closed."""
        await self.pool.closeCachedConnections()
