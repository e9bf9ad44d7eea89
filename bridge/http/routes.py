"""The route table, and the one decision made from it for each request.

Every route the bridge serves is one :class:`Route` in :data:`ROUTES`.  The
parser-driven channel decides a request's route once, from its normalized
target (:func:`normalize_target`); authentication, admission (work routes),
the metrics label, the access log and dispatch all read that one
:class:`Decision`, and Klein is given only the routes of this table (see
:meth:`bridge.http.api.BridgeAPI.resource`), so no path can reach a handler
by a way the decision did not see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from httptools import HttpParserInvalidURLError, parse_url

from bridge.http.limits import ClientError

OTHER = "other"  # the metrics label of every request that matched no route


@dataclass(frozen=True)
class Route:
    """One route.

    ``hot`` routes are answered through the channel's light request object
    (their handlers take the small IRequest subset); the others are rendered
    by Klein on a real twisted.web Request.  ``work`` routes write to the
    upstream: they pass admission and are counted in flight.  ``open`` routes
    need no token; ``metrics`` marks the route that is open when
    ``metrics_auth`` is off.  ``quiet`` routes (probes, scrapes, the page)
    stay out of the access log.  ``scope`` is what a scoped token must allow
    (``send``, ``request`` or ``events``); a path with ``{upstream}``
    addresses one named upstream (:data:`UPSTREAM_PREFIX`), the others the one
    named ``default``.  ``ui`` routes (the page's assets) are served only
    while the ``ui`` setting is on (see :func:`served_routes`).
    """

    path: bytes
    methods: tuple[bytes, ...]
    handler: str
    hot: bool = False
    work: bool = False
    open: bool = False
    metrics: bool = False
    quiet: bool = False
    scope: str | None = None
    ui: bool = False

    @property
    def label(self) -> str:
        return self.path.decode("ascii")

    @property
    def per_upstream(self) -> bool:
        return self.path.startswith(UPSTREAM_PREFIX)

    @property
    def klein_path(self) -> str:
        """The path in Klein's (werkzeug's) syntax: ``{upstream}`` as ``<upstream>``."""
        return self.label.replace("{upstream}", "<upstream>")


#: Routes under /u/NAME/ address the upstream named NAME.
UPSTREAM_PREFIX = b"/u/{upstream}/"
DEFAULT_UPSTREAM = "default"

ROUTES: tuple[Route, ...] = (
    Route(b"/send", (b"POST",), "send", hot=True, work=True, scope="send"),
    Route(b"/request", (b"POST",), "request", hot=True, work=True, scope="request"),
    Route(b"/healthz", (b"GET", b"HEAD"), "healthz", hot=True, open=True, quiet=True),
    Route(b"/readyz", (b"GET", b"HEAD"), "readyz", hot=True, open=True, quiet=True),
    Route(b"/status", (b"GET", b"HEAD"), "status"),
    Route(b"/metrics", (b"GET", b"HEAD"), "metrics_page", metrics=True, quiet=True),
    Route(b"/events", (b"GET",), "events_stream", scope="events"),
    Route(b"/u/{upstream}/send", (b"POST",), "send", hot=True, work=True, scope="send"),
    Route(b"/u/{upstream}/request", (b"POST",), "request", hot=True, work=True,
          scope="request"),
    Route(b"/u/{upstream}/events", (b"GET",), "events_stream", scope="events"),
    Route(b"/u/{upstream}/readyz", (b"GET", b"HEAD"), "upstream_readyz", hot=True, open=True,
          quiet=True),
    Route(b"/openapi.json", (b"GET", b"HEAD"), "openapi_json"),
    # The status page (bridge/http/ui/): / is the page for a browser, the
    # route index for any other client; the page and its assets hold no data
    # and no secret, so they need no token (the page asks for it).
    Route(b"/", (b"GET", b"HEAD"), "index", hot=True, open=True, quiet=True),
    Route(b"/ui/app.js", (b"GET", b"HEAD"), "asset", hot=True, open=True, quiet=True, ui=True),
    Route(b"/ui/app.css", (b"GET", b"HEAD"), "asset", hot=True, open=True, quiet=True, ui=True),
    Route(b"/ui/favicon.svg", (b"GET", b"HEAD"), "asset", hot=True, open=True, quiet=True,
          ui=True),
)

LABELS: frozenset[str] = frozenset(route.label for route in ROUTES) | {OTHER}


def served_routes(ui: bool = True, routes: tuple[Route, ...] = ROUTES) -> tuple[Route, ...]:
    """The routes a bridge serves: all of them, less the page's assets when
    the ``ui`` setting is off."""
    return routes if ui else tuple(route for route in routes if not route.ui)


class Target(NamedTuple):
    """A request target reduced to what routing and handlers use."""

    path: bytes  # percent-encoded unreserved characters decoded, nothing else changed
    query: bytes  # as received, without the "?"


@dataclass(frozen=True)
class Decision:
    """The route of one request, or why none matched (a 404 or 405)."""

    route: Route | None
    label: str = OTHER  # the metrics label: the route's path, even for a 405
    miss: ClientError | None = None
    quiet: bool = False  # kept out of the access log (the route's, even for a 405)
    upstream: str = DEFAULT_UPSTREAM  # the upstream the route addresses


_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _decode_unreserved(match: re.Match[bytes]) -> bytes:
    byte = int(match.group(1), 16)
    return bytes((byte,)) if byte in _UNRESERVED else match.group(0)


def normalize_target(raw: bytes) -> Target:
    """The path and query of an origin-form (``/send?x``) or absolute-form
    (``http://host/send?x``, which RFC 9112 says a server MUST accept) target.

    Percent-encoded unreserved characters are decoded (RFC 3986 6.2.2.2: they
    mean the same), so ``/%73end`` is ``/send`` for every purpose; no other
    rewriting (``//send`` and ``/./send`` are simply other paths).  Anything
    else (asterisk- and authority-form, a fragment, userinfo) is a 400.
    """
    if raw.startswith(b"/"):
        # llhttp checked its characters; origin-form is a path and a query.
        if b"#" in raw:
            raise ClientError(400, "invalid_target", "the request target may not hold a fragment")
        path, _, query = raw.partition(b"?")
    elif raw[:7].lower() == b"http://" or raw[:8].lower() == b"https://":
        try:
            parts = parse_url(raw)
        except HttpParserInvalidURLError:
            raise ClientError(400, "invalid_target",
                              "the request target is not a valid URL") from None
        if parts.fragment is not None or parts.userinfo is not None:
            raise ClientError(400, "invalid_target",
                              "the request target may not hold a fragment or user information")
        path, query = parts.path or b"/", parts.query or b""
        if not path.startswith(b"/"):
            raise ClientError(400, "invalid_target", "the request target is not a valid URL")
    else:
        raise ClientError(400, "invalid_target",
                          "the request target must be a path (/send) or an absolute http URL")
    if b"%" in path:
        path = _ESCAPE.sub(_decode_unreserved, path)
    return Target(path, query)


class RouteTable:
    """Looks a (method, path) up in :data:`ROUTES`, for the configured
    upstream names (``/u/NAME/...`` for any other NAME is a 404)."""

    def __init__(
        self, routes: tuple[Route, ...] = ROUTES, upstreams: tuple[str, ...] = (DEFAULT_UPSTREAM,)
    ) -> None:
        self._upstreams = upstreams
        self._by_path: dict[bytes, tuple[Route, str]] = {}
        for route in routes:
            if route.per_upstream:
                for name in upstreams:
                    path = route.path.replace(b"{upstream}", name.encode("ascii"))
                    self._by_path[path] = (route, name)
            else:
                self._by_path[route.path] = (route, DEFAULT_UPSTREAM)
        self._patterns = {route.path for route in routes if route.per_upstream}
        # The decisions of the routes' own methods, made once (the hot path).
        self._hits = {
            (method, path): Decision(route, route.label, quiet=route.quiet, upstream=name)
            for path, (route, name) in self._by_path.items() for method in route.methods
        }

    def decide(self, method: bytes, path: bytes) -> Decision:
        hit = self._hits.get((method, path))
        if hit is not None:
            return hit
        found = self._by_path.get(path)
        if found is None:
            return Decision(None, OTHER, self._missing(path))
        route, name = found
        allowed = ", ".join(sorted(m.decode("ascii") for m in route.methods))
        miss = ClientError(
            405, "method_not_allowed",
            f"{method.decode('latin-1')} is not allowed here; use {allowed}",
            headers=((b"Allow", allowed.encode("ascii")),),
        )
        return Decision(None, route.label, miss, route.quiet, name)

    def _missing(self, path: bytes) -> ClientError:
        text = path.decode("latin-1")
        if path.startswith(b"/u/"):
            name, slash, rest = path[3:].partition(b"/")
            if slash and b"/u/{upstream}/" + rest in self._patterns:
                known = ", ".join(self._upstreams)
                return ClientError(404, "unknown_upstream",
                                   f"no upstream named {name.decode('latin-1')!r}; "
                                   f"the configured ones are: {known}")
        return ClientError(404, "not_found", f"no route {text}")
