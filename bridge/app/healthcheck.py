"""``bridge healthcheck``: probe a running bridge, for container HEALTHCHECKs.

Exit 0 when healthy, 1 when not, 2 for bad arguments; one line of reason.

A HEALTHCHECK runs this every few seconds for the life of the container, so
it stays on the standard library (:mod:`bridge.app.probe`): nothing on this
path imports Twisted, treq or the daemon's modules.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping, Sequence

from bridge.addresses import AddressError, listen_address
from bridge.app.probe import TargetError, get, parse_target

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2


def default_url(environ: Mapping[str, str]) -> str:
    """BRIDGE_HEALTHCHECK_URL, else where the bridge's own BRIDGE_LISTEN says it
    listens, else DEFAULT_URL."""
    explicit = environ.get("BRIDGE_HEALTHCHECK_URL")
    if explicit:
        return explicit
    return url_for_listen(environ.get("BRIDGE_LISTEN", "")) or DEFAULT_URL


def url_for_listen(listen: str) -> str | None:
    """The URL that reaches a bridge listening on ``listen`` from this host (a
    wildcard host is probed on loopback; a unix socket as ``unix:PATH``), or
    None when ``listen`` is empty or not understood."""
    if not listen.strip():
        return None
    try:
        address = listen_address(listen)
    except AddressError:
        return None
    if address.kind == "unix" and address.path:
        return f"unix:{address.path}"
    if address.kind not in ("tcp", "tcp6", "ssl") or not address.port:
        return None
    host = address.interface or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    scheme = "https" if address.kind == "ssl" else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{address.port}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge healthcheck",
        description="GET /healthz (or /readyz with --ready) of a running bridge; "
        "exit 0 when healthy, 1 when not.",
    )
    parser.add_argument(
        "--url",
        default=default_url(os.environ),
        help="the bridge: http://HOST:PORT, https://HOST:PORT or unix:/PATH/TO/SOCKET "
        "(default: %(default)s, from BRIDGE_HEALTHCHECK_URL, else BRIDGE_LISTEN)",
    )
    parser.add_argument("--ready", action="store_true",
                        help="check readiness (/readyz: upstream connected) instead of liveness")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds to wait for the answer (default: %(default)s)")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if not args.timeout > 0:  # also refuses nan
        print("bridge healthcheck: --timeout must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        target = parse_target(args.url)
    except TargetError as problem:
        print(f"bridge healthcheck: --url is not usable: {args.url}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    path = "/readyz" if args.ready else "/healthz"
    shown = target.display(path)
    answer = get(target, path, args.timeout, os.environ.get("BRIDGE_TOKEN") or None)
    if answer.error is not None:
        print(f"unhealthy: {shown}: {answer.error}")
        return EXIT_UNHEALTHY
    if answer.status == 200:
        print(f"healthy: {shown} answered 200")
        return EXIT_HEALTHY
    detail = answer.body[:200].decode("utf-8", "replace").strip()
    print(f"unhealthy: {shown} answered {answer.status} {detail}")
    return EXIT_UNHEALTHY
