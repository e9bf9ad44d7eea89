"""``bridge healthcheck``: probe a running bridge, for container HEALTHCHECKs.

Exit 0 when healthy, 1 when not, 2 for bad arguments; one line of reason.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Mapping, Sequence

from bridge.endpoints import AddressError, server_description

DEFAULT_URL = "http://127.0.0.1:8080"


def default_url(environ: Mapping[str, str]) -> str:
    """BRIDGE_HEALTHCHECK_URL, else the bridge's own BRIDGE_LISTEN when it is
    HOST:PORT (a wildcard host probed on loopback), else DEFAULT_URL."""
    explicit = environ.get("BRIDGE_HEALTHCHECK_URL")
    if explicit:
        return explicit
    listen = environ.get("BRIDGE_LISTEN", "").strip()
    if not listen:
        return DEFAULT_URL
    try:
        description = server_description(listen)
    except AddressError:
        return DEFAULT_URL
    # tcp:PORT[:interface=HOST], tcp6:..., ssl:PORT:...: the port and interface.
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6", "ssl"):
        return DEFAULT_URL  # unix: and others: set BRIDGE_HEALTHCHECK_URL
    fields = re.split(r"(?<!\\):", rest)
    port = fields[0]
    host = "127.0.0.1"
    for field in fields[1:]:
        if field.startswith("interface="):
            host = field[len("interface="):].replace("\\:", ":")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    scheme = "https" if kind == "ssl" else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge healthcheck",
        description="GET /healthz (or /readyz with --ready) of a running bridge; "
        "exit 0 when healthy, 1 when not.",
    )
    parser.add_argument(
        "--url",
        default=default_url(os.environ),
        help="base URL of the bridge (default: %(default)s, from BRIDGE_HEALTHCHECK_URL, "
        "else BRIDGE_LISTEN's port on loopback)",
    )
    parser.add_argument("--ready", action="store_true",
                        help="check readiness (/readyz: upstream connected) instead of liveness")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds to wait for the answer (default: %(default)s)")
    return parser


def _probe(reactor: Any, url: str, timeout: float, token: str | None) -> Any:
    import treq
    from twisted.web.client import HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    headers: Any = {b"Authorization": [b"Bearer " + token.encode("utf-8")]} if token else {}
    result: dict[str, Any] = {}

    def got(response: Any) -> Any:
        result["code"] = response.code
        return treq.content(response)

    def body(content: bytes) -> None:
        result["body"] = content

    def failed(failure: Any) -> None:
        from twisted.internet.defer import CancelledError
        from twisted.web.client import ResponseNeverReceived

        # A timeout cancels the request; the agent wraps that (and a connection
        # closed before any answer) in ResponseNeverReceived([Failure, ...]).
        reasons = failure.value.reasons if failure.check(ResponseNeverReceived) else [failure]
        if any(reason.check(CancelledError) for reason in reasons):
            result["error"] = f"no answer within {timeout:g} s"
            return
        result["error"] = "; ".join(
            reason.getErrorMessage() or reason.type.__name__ for reason in reasons
        ) or failure.type.__name__

    d = treq.get(url, headers=headers, pool=pool, timeout=timeout, reactor=reactor)
    d.addCallback(got).addCallbacks(body, failed)
    d.addCallback(lambda _: pool.closeCachedConnections())
    d.addCallback(lambda _: result)
    return d


def _url_problem(url: str) -> str | None:
    """Why treq could not send to ``url`` (a bad argument), or None."""
    from hyperlink import EncodedURL

    try:
        parsed = EncodedURL.from_text(url)
        parsed.to_uri()  # what treq does first: raises for hosts it cannot encode
    except ValueError as error:  # URLParseError and idna's errors are ValueErrors
        return str(error) or type(error).__name__
    if not parsed.host:
        return "no host"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"port {parsed.port} is out of range"
    return None


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if not args.timeout > 0:
        print("bridge healthcheck: --timeout must be positive", file=sys.stderr)
        return 2
    path = "/readyz" if args.ready else "/healthz"
    url = args.url.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        print(f"bridge healthcheck: --url must start with http:// or https://: {args.url}",
              file=sys.stderr)
        return 2
    problem = _url_problem(url)
    if problem:
        print(f"bridge healthcheck: --url is not usable: {args.url}: {problem}", file=sys.stderr)
        return 2
    from twisted.internet.task import react

    outcome: dict[str, Any] = {}

    def check(reactor: Any) -> Any:
        token = os.environ.get("BRIDGE_TOKEN") or None
        d = _probe(reactor, url, args.timeout, token)
        d.addCallback(outcome.update)
        return d

    try:
        react(check, [])
    except SystemExit as stop:
        if stop.code not in (0, None):
            print(f"unhealthy: {url}: internal error", file=sys.stdout)
            return 1
    if "error" in outcome:
        print(f"unhealthy: {url}: {outcome['error']}")
        return 1
    code = outcome.get("code")
    if code == 200:
        print(f"healthy: {url} answered 200")
        return 0
    detail = outcome.get("body", b"")[:200].decode("utf-8", "replace").strip()
    print(f"unhealthy: {url} answered {code} {detail}")
    return 1
