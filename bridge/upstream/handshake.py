"""What a connection must pass before a member counts as ready.

Used as ClientService's ``prepareConnection``: the greeting of a server that
speaks first (``greeting_expect``), then the handshake lines, each reply
checked against ``handshake_expect``.  Only then is the member connected and
its backoff reset.
"""

from __future__ import annotations

import re
from typing import Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from bridge.errors import BridgeError
from bridge.upstream.protocol import UpstreamProtocol
from bridge.upstream.replies.frames import Frame


class HandshakeError(Exception):
    """The upstream did not accept the handshake.  The message is safe to log."""


def mask(line: str) -> str:
    """Keep the command word, hide the arguments (AUTH secret -> AUTH ***)."""
    word, _, rest = line.partition(" ")
    return f"{word} ***" if rest else word


class Handshake:
    """Await the greeting (if expected), then send each line and check each reply."""

    def __init__(
        self,
        lines: Sequence[str],
        expect: str | None,
        timeout: float,
        delimiter: bytes,
        greeting: str | None = None,
    ) -> None:
        self._lines = [line.encode("utf-8") + delimiter for line in lines]
        self._shown = [mask(line) for line in lines]
        self._expect = re.compile(expect.encode("utf-8")) if expect else None
        self._greeting = re.compile(greeting.encode("utf-8")) if greeting else None
        self._timeout = timeout

    def __bool__(self) -> bool:
        return bool(self._lines) or self._greeting is not None

    def accepted_note(self) -> str:
        """What the "connected" log line adds once this was passed."""
        passed = [name for name, there in (("greeting", self._greeting is not None),
                                           ("handshake", bool(self._lines))) if there]
        return f" ({' and '.join(passed)} accepted)" if passed else ""

    def run(self, protocol: UpstreamProtocol) -> Deferred[None]:
        """Fires with None when accepted; fails with HandshakeError otherwise."""
        current: list[Deferred[list[Frame]]] = []

        def cancel(_: Deferred[None]) -> None:
            if current:
                current[0].cancel()

        done: Deferred[None] = Deferred(cancel)

        def refuse(message: str) -> None:
            if not done.called:
                done.errback(HandshakeError(message))

        def step(index: int) -> None:
            if index == len(self._lines):
                done.callback(None)
                return
            shown = f"handshake line {index + 1} ({self._shown[index]})"
            reply = protocol.ask(self._lines[index], self._timeout)
            current[:] = [reply]
            reply.addCallbacks(lambda frames: checked(frames, shown, self._expect, index),
                               lambda failure: failed(failure, shown))

        def checked(frames: list[Frame], what: str, pattern: re.Pattern[bytes] | None,
                    index: int) -> None:
            text = frames[0].text
            if pattern is not None and not pattern.search(text):
                refuse(f"{what} got {text[:200]!r}, which does not match {pattern.pattern!r}")
                return
            step(index + 1)

        def failed(failure: Failure, what: str) -> None:
            error = failure.value
            reason = error.message if isinstance(error, BridgeError) else str(error)
            refuse(f"{what} failed: {reason}")

        if self._greeting is not None:
            greeting = protocol.await_greeting(self._timeout)
            current[:] = [greeting]
            greeting.addCallbacks(lambda frames: checked(frames, "the greeting", self._greeting,
                                                         -1),
                                  lambda failure: failed(failure, "the greeting"))
        else:
            step(0)
        return done
