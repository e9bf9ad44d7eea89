"""The status page's files (``bridge/http/ui/``), served by the bridge itself.

The page is static: HTML, CSS and JavaScript shipped in the package, with
no data and no secret in them (the page fetches /status, /events and the
try-it calls itself, with the token the person gives it).  So they are
served without a token, under a Content-Security-Policy that lets the page
load and fetch from the bridge's own origin only.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

#: Only the bridge's own origin: no inline script or style, no other host,
#: no frames, no plugins.
CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       b"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       b"form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy", CSP),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    # Revalidate: after an upgrade the page and its script must match.
    (b"Cache-Control", b"no-cache"),
)

PAGE = "index.html"
#: Request path -> (file in bridge/http/ui/, Content-Type).
ASSETS: dict[bytes, tuple[str, bytes]] = {
    b"/ui/app.js": ("app.js", b"text/javascript; charset=utf-8"),
    b"/ui/app.css": ("app.css", b"text/css; charset=utf-8"),
    b"/ui/favicon.svg": ("favicon.svg", b"image/svg+xml"),
}
HTML = b"text/html; charset=utf-8"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: bytes


def read_file(name: str) -> bytes:
    """One file of the page, from the installed package."""
    return (files("bridge.http") / "ui" / name).read_bytes()


class StatusPage:
    """The page and its assets, read once (a missing file fails at start-up,
    not when a person opens the page)."""

    def __init__(self) -> None:
        self.page = StaticFile(read_file(PAGE), HTML)
        self.assets = {path: StaticFile(read_file(name), kind)
                       for path, (name, kind) in ASSETS.items()}


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def wants_html(accept: bytes | None) -> bool:
    """Whether a client asks for HTML before JSON: text/html named with a
    quality above 0 and at least that of JSON (browsers); ``*/*`` alone (curl)
    or no Accept at all means JSON."""
    if not accept:
        return False
    html = json = 0.0
    for item in accept.decode("latin-1").split(","):
        kind, *parameters = item.split(";")
        kind = kind.strip().lower()
        quality = _quality(parameters)
        if kind == "text/html":
            html = max(html, quality)
        elif kind in ("application/json", "application/*", "*/*"):
            json = max(json, quality)
    return html > 0 and html >= json
