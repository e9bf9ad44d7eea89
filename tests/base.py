"""The base class of the real-process tests: :class:`BridgeTestCase`."""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from typing import Any, ClassVar

from twisted.trial.unittest import TestCase

from tests.bridge_process import BridgeProcess
from tests.http_client import BridgeClient, Reply
from tests.line_server import LineServer, Replier
from tests.ports import LOOPBACK, unused_port
from tests.waiting import wait_for

__all__ = ["BridgeTestCase"]


class BridgeTestCase(TestCase):
    """One real bridge per test class, a fresh :class:`LineServer` per test.

    The bridge is started by the class's first test with ``bridge_args`` and
    ``--upstream 127.0.0.1:<upstream_port>`` and stopped in ``tearDownClass``
    (pytest calls it); every test that calls
    :meth:`start_upstream` gets a new line server on that same port, and the
    bridge, which reconnects quickly (``--backoff-initial 0.05
    --backoff-max 0.2``), connects to it.  The server is stopped after the
    test, which leaves the bridge reconnecting until the next test's server.

    Per-test bridges (different flags, signals, exit codes) are started with
    :meth:`start_bridge` and stopped in cleanup.
    """

    timeout = 30
    #: Flags for the class's bridge (the class attribute of subclasses).
    bridge_args: ClassVar[tuple[str, ...]] = ()
    #: Connections the class's bridge keeps (``--pool-size``).
    pool_size: ClassVar[int] = 1
    #: Whether this class has a shared bridge at all.
    shared_bridge: ClassVar[bool] = True

    FAST_RECONNECT: ClassVar[tuple[str, ...]] = (
        "--backoff-initial", "0.05", "--backoff-max", "0.2",
    )

    upstream_port: ClassVar[int]
    _shared: ClassVar[BridgeProcess | None] = None

    @classmethod
    def class_bridge(cls) -> BridgeProcess:
        """The class's bridge, started on first use."""
        if cls.__dict__.get("_shared") is None:
            cls.upstream_port = cls.prepare_upstream()
            bridge = BridgeProcess.bridge(
                "--listen", f"{LOOPBACK}:0",
                "--upstream", f"{LOOPBACK}:{cls.upstream_port}",
                "--pool-size", str(cls.pool_size),
                *cls.FAST_RECONNECT,
                *cls.bridge_args,
            )
            cls._shared = bridge
            # A safety net for runners that never call tearDownClass.
            atexit.register(bridge.stop_now)
        assert cls._shared is not None
        return cls._shared

    @classmethod
    def prepare_upstream(cls) -> int:
        """The class's upstream port, called once before its bridge starts.
        Here a free port for the per-test line servers; a subclass may start a
        real server there (and stop it in ``tearDownClass``)."""
        return unused_port()

    @classmethod
    def tearDownClass(cls) -> None:
        bridge = cls.__dict__.get("_shared")
        if bridge is not None:
            cls._shared = None
            bridge.stop_now()
            atexit.unregister(bridge.stop_now)
        super().tearDownClass()

    async def setUp(self) -> None:  # type: ignore[override]
        self.bridge: BridgeProcess | None = None
        self.http: BridgeClient | None = None
        if self.shared_bridge:
            shared = self.class_bridge()
            await shared.wait_listening()
            self.bridge = shared
            since = len(shared.stdout())
            # Shown by pytest if this test fails: the class bridge's log of this test.
            self.addCleanup(lambda: print(shared.describe(since)))
            self.http = self.client(shared)

    def client(self, bridge: BridgeProcess, *, persistent: bool = True) -> BridgeClient:
        """An HTTP client for ``bridge``, closed in cleanup."""
        client = BridgeClient(bridge.url, persistent=persistent)
        self.addCleanup(client.close)
        return client

    async def start_bridge(self, *args: str, env: Mapping[str, str] | None = None) -> BridgeProcess:
        """Start ``python -m bridge ARGS`` for this test only: see :meth:`use`."""
        return await self.use(BridgeProcess.bridge(*args, env=env))

    async def use(self, process: BridgeProcess) -> BridgeProcess:
        """Stop ``process`` in cleanup, wait until it listens, and make it the
        bridge that ``self.http`` and the wait helpers talk to."""
        self.addCleanup(process.stop)
        await process.wait_listening()
        self.bridge = process
        self.http = self.client(process)
        return process

    async def start_upstream(
        self,
        reply: Replier | None = None,
        *,
        connected: int | None = None,
        **behaviour: Any,
    ) -> LineServer:
        """Start this test's line server on the class's upstream port and wait
        until the shared bridge has ``connected`` (default: all) members
        connected to it and says it is ready."""
        server = LineServer(reply, **behaviour)
        server.start(self.upstream_port)
        self.addCleanup(server.stop)
        await self.wait_connected(server, self.pool_size if connected is None else connected)
        return server

    async def wait_connected(self, server: LineServer, count: int, timeout: float = 10.0) -> None:
        """Wait until ``server`` has ``count`` open connections and /readyz
        reports that many connected members."""
        assert self.http is not None and self.bridge is not None
        http, bridge = self.http, self.bridge

        async def connected() -> bool:
            if len(server.open_connections) < count:
                return False
            ready = await http.get("/readyz")
            return ready.status == 200 and ready.json()["connected"] == count

        await wait_for(
            connected, timeout=timeout, what=f"{count} bridge connection(s) to the line server",
            context=lambda: server.describe() + "\n" + bridge.describe(),
        )

    async def wait_status(self, code: int, path: str = "/readyz", timeout: float = 5.0) -> Reply:
        """Poll ``path`` until it answers ``code``; returns that answer."""
        assert self.http is not None and self.bridge is not None
        http, bridge = self.http, self.bridge
        seen: list[Reply] = []

        async def answered() -> Reply | None:
            reply = await http.get(path)
            seen[:] = [reply]
            return reply if reply.status == code else None

        reply: Reply = await wait_for(
            answered, timeout=timeout, what=f"GET {path} to answer {code}",
            context=lambda: f"last answer: {seen[-1] if seen else None}\n{bridge.describe()}",
        )
        return reply
