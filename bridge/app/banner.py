"""What ``make run`` prints before it starts the bridge: curl lines for the
address that ARGS (or BRIDGE_LISTEN) chose, so that they work as printed.

``python -m bridge.app.banner [BRIDGE ARGS...]``; light on purpose (no
Twisted), since it runs before every ``make run``.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Mapping, Sequence

from bridge.app.healthcheck import DEFAULT_URL, url_for_listen


def listen_setting(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The last ``--listen`` of ``argv`` (as argparse takes it), else BRIDGE_LISTEN."""
    listen = environ.get("BRIDGE_LISTEN", "")
    for index, word in enumerate(argv):
        if word == "--listen" and index + 1 < len(argv):
            listen = argv[index + 1]
        elif word.startswith("--listen="):
            listen = word[len("--listen="):]
    return listen


def curl(url: str, path: str, body: str) -> str:
    """A curl command line that POSTs ``body`` to ``path`` of the bridge at ``url``."""
    post = f"curl -X POST --data-binary {shlex.quote(body)}"
    if url.startswith("unix:"):
        socket_path = shlex.quote(url[len("unix:"):])
        return f"{post} --unix-socket {socket_path} http://localhost{path}"
    return f"{post} {url}{path}"


def banner(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    url = url_for_listen(listen_setting(argv, environ)) or DEFAULT_URL
    return "\n".join([
        "",
        f"Starting the bridge with a demo upstream on {url}. In another terminal try:",
        "  " + curl(url, "/send", "hello world"),
        "  " + curl(url, "/request", "PING"),
        "Another port: make run ARGS='--listen 127.0.0.1:9090'. Stop with Ctrl-C.",
        "",
    ])


def main(argv: Sequence[str]) -> int:
    print(banner(argv, os.environ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
