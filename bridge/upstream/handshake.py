"""Lines sent right after connecting, before a member counts as ready.

Used as ClientService's ``prepareConnection``: only after every reply matched
``handshake_expect`` is the member connected and its backoff reset.
"""

from __future__ import annotations

import re
from typing import Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from bridge.errors import BridgeError
from bridge.upstream.protocol import UpstreamProtocol


class HandshakeError(Exception):
    """The upstream did not accept the handshake.  The message is safe to log."""


def mask(line: str) -> str:
    """Keep the command word, hide the arguments (AUTH secret -> AUTH ***)."""
    word, _, rest = line.partition(" ")
    return f"{word} ***" if rest else word


class Handshake:
    """Send each line in turn and check each reply."""

    def __init__(
        self,
        lines: Sequence[str],
        expect: str | None,
        timeout: float,
        delimiter: bytes,
    ) -> None:
        self._lines = [line.encode("utf-8") + delimiter for line in lines]
        self._shown = [mask(line) for line in lines]
        self._expect = re.compile(expect.encode("utf-8")) if expect else None
        self._timeout = timeout

    def __bool__(self) -> bool:
        return bool(self._lines)

    def run(self, protocol: UpstreamProtocol) -> Deferred[None]:
        """Fires with None when accepted; fails with HandshakeError otherwise."""
        current: list[Deferred[list[bytes]]] = []

        def cancel(_: Deferred[None]) -> None:
            if current:
                current[0].cancel()

        done: Deferred[None] = Deferred(cancel)

        def step(index: int) -> None:
            if index == len(self._lines):
                done.callback(None)
                return
            reply = protocol.request(self._lines[index], 1, self._timeout)
            current[:] = [reply]

            def got(replies: list[bytes]) -> None:
                line = replies[0]
                if self._expect is not None and not self._expect.search(line):
                    done.errback(
                        HandshakeError(
                            f"handshake line {index + 1} ({self._shown[index]}) got "
                            f"{line[:200]!r}, which does not match {self._expect.pattern!r}"
                        )
                    )
                    return
                step(index + 1)

            def failed(failure: Failure) -> None:
                if done.called:
                    return
                error = failure.value
                reason = error.message if isinstance(error, BridgeError) else str(error)
                done.errback(
                    HandshakeError(
                        f"handshake line {index + 1} ({self._shown[index]}) failed: {reason}"
                    )
                )

            reply.addCallbacks(got, failed)

        step(0)
        return done
