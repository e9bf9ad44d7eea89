"""End-to-end check of the container image (`make container-test`).

Builds the image from the repository's Dockerfile, then, on a private Docker
network:

1. starts an upstream line server (a few lines of Python in a container of
   the same image) that prints every line it receives and when its peer
   closes;
2. starts the bridge the strict way: read-only root filesystem (the image's
   /tmp volume is the only writable place), all capabilities dropped, no
   privilege escalation, a token, the port published on 127.0.0.1 only;
3. waits for Docker to report the container healthy (the image's own
   HEALTHCHECK, `bridge healthcheck`), then for `bridge healthcheck --ready`;
4. checks the process runs as UID 10001, POST /send without the token is 401,
   POST /send through the published port reaches the upstream byte for byte,
   and a chunked 174 kB body (twisted.web spools it to a temporary file, so
   this needs the writable /tmp) gets through too;
5. `docker stop` (SIGTERM): the bridge must exit with status 0 within
   shutdown_grace, having half-closed its upstream connection;
6. reports the size the image adds on top of its base image (limit 60 MB).

Needs only the Python standard library and the docker CLI with a reachable
daemon (DOCKER_HOST is honoured). Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
TOKEN = "container-test-token"
GRACE = 10.0  # the image's default shutdown_grace
ADDED_LIMIT_MB = 60.0
BUILD_ARGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
              "http_proxy", "https_proxy", "no_proxy")

# The example upstream: prints each line received (repr, so CR/LF show), and
# "eof" when the bridge closes its side, then closes its own side.
UPSTREAM = r"""
import socket, sys
server = socket.create_server(("0.0.0.0", 7000))
print("upstream listening", flush=True)
while True:
    connection, _ = server.accept()
    print("upstream connection", flush=True)
    buffer = b""
    while True:
        data = connection.recv(65536)
        if not data:
            print("upstream eof", flush=True)
            connection.close()
            break
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            print("upstream line", repr(line + b"\n"), flush=True)
"""


def step(message: str) -> None:
    print(f"container-test: {message}", flush=True)


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")
    return result.stdout.strip()


def wait_for(predicate: Callable[[], T | None], what: str, timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)  # polling interval, not synchronisation
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def post(url: str, body: bytes, token: str | None, chunked: bool = False) -> tuple[int, bytes]:
    """POST ``body``; ``chunked`` sends it without Content-Length, in 16 kB chunks."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        if chunked:
            chunks = (body[start:start + 16384] for start in range(0, len(body), 16384))
            headers["Transfer-Encoding"] = "chunked"
            connection.request("POST", parts.path, body=chunks, headers=headers,
                               encode_chunked=True)
        else:
            connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def base_image(dockerfile: Path) -> str:
    names = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
    return names[-1]


class Run:
    def __init__(self, image: str, build: bool) -> None:
        self.image = image
        self.build = build
        suffix = f"{os.getpid()}"
        self.network = f"bridge-ct-{suffix}"
        self.upstream = f"bridge-ct-upstream-{suffix}"
        self.bridge = f"bridge-ct-bridge-{suffix}"
        self.created: list[tuple[str, str]] = []

    def cleanup(self) -> None:
        for kind, name in reversed(self.created):
            if kind == "container":
                docker("rm", "-f", "-v", name, check=False)
            else:
                docker("network", "rm", name, check=False)

    def upstream_log(self) -> str:
        return docker("logs", self.upstream, check=False)

    def main(self) -> None:
        if self.build:
            step(f"building {self.image} from {REPO}")
            build_args = [item for name in BUILD_ARGS if name in os.environ
                          for item in ("--build-arg", name)]
            started = time.monotonic()
            docker("build", "-t", self.image, *build_args, str(REPO), timeout=1800)
            step(f"built in {time.monotonic() - started:.0f} s")

        base = base_image(REPO / "Dockerfile")
        image_size = int(docker("image", "inspect", "-f", "{{.Size}}", self.image))
        base_size = int(docker("image", "inspect", "-f", "{{.Size}}", base))
        added = (image_size - base_size) / 1e6
        step(f"image {image_size / 1e6:.1f} MB, of which {added:.1f} MB added on top of {base}")
        if added >= ADDED_LIMIT_MB:
            raise RuntimeError(f"the image adds {added:.1f} MB, limit {ADDED_LIMIT_MB:g} MB")

        docker("network", "create", self.network)
        self.created.append(("network", self.network))
        docker("run", "-d", "--name", self.upstream, "--network", self.network,
               "--read-only", "--entrypoint", "python", self.image, "-c", UPSTREAM)
        self.created.append(("container", self.upstream))
        wait_for(lambda: "upstream listening" in self.upstream_log(), "the upstream", 30)

        launched = time.monotonic()
        docker("run", "-d", "--name", self.bridge, "--network", self.network,
               "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "-p", "127.0.0.1::8080",
               "-e", f"BRIDGE_TOKEN={TOKEN}", "-e", f"BRIDGE_UPSTREAM={self.upstream}:7000",
               self.image)
        self.created.append(("container", self.bridge))

        # Start time: from `docker run` to the first 200 of /readyz (listening
        # and connected to the upstream) through the published port. Printed,
        # not checked: this machine's load decides most of it.
        address = docker("port", self.bridge, "8080/tcp").splitlines()[0]

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_for(ready, "GET /readyz to answer 200", 60)
        step(f"started: GET /readyz answered 200 {time.monotonic() - launched:.1f} s after "
             "docker run")

        def health() -> str | None:
            status = docker("inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}",
                            self.bridge)
            if not status.startswith("running"):
                raise RuntimeError(f"the bridge container is {status}:\n"
                                   + docker("logs", self.bridge, check=False))
            return status if status.endswith("healthy") and "unhealthy" not in status else None

        started = time.monotonic()
        wait_for(health, "Docker to report the bridge healthy", 90)
        step(f"ok: healthy (image HEALTHCHECK) after {time.monotonic() - started:.1f} s")
        wait_for(lambda: docker("exec", self.bridge, "bridge", "healthcheck", "--ready",
                                check=False).startswith("healthy"),
                 "bridge healthcheck --ready", 60)
        step("ok: ready (bridge healthcheck --ready inside the container)")

        uid = docker("exec", self.bridge, "python", "-c", "import os; print(os.getuid())")
        if uid != "10001":
            raise RuntimeError(f"the bridge runs as UID {uid}, not 10001")
        step("ok: runs as UID 10001, root filesystem read-only")

        base_url = f"http://{address}"
        status, body = post(base_url + "/send", b"SET a 1\n", None)
        if status != 401:
            raise RuntimeError(f"POST /send without the token answered {status} {body!r}")
        step(f"ok: POST {base_url}/send without the token: 401")

        status, body = post(base_url + "/send", b"SET greeting hello\nINCR hits\n", TOKEN)
        if (status, json.loads(body)) != (202, {"sent": 2}):
            raise RuntimeError(f"POST /send answered {status} {body!r}")
        expected = ["upstream line b'SET greeting hello\\r\\n'", "upstream line b'INCR hits\\r\\n'"]
        wait_for(lambda: all(line in self.upstream_log() for line in expected),
                 "the lines at the upstream", 30)
        step(f"ok: POST {base_url}/send: 202, the upstream received {expected}")

        lines = [f"RPUSH big {index:06d} " + "x" * 40 for index in range(3000)]
        big = ("\n".join(lines) + "\n").encode("ascii")
        status, body = post(base_url + "/send", big, TOKEN, chunked=True)
        if (status, json.loads(body)) != (202, {"sent": len(lines)}):
            raise RuntimeError(f"POST /send of {len(big)} bytes answered {status} {body!r}")
        last = f"upstream line b'{lines[-1]}\\r\\n'"
        wait_for(lambda: last in self.upstream_log(), "the large body at the upstream", 30)
        received = self.upstream_log().count("upstream line b'RPUSH big ")
        if received != len(lines):
            raise RuntimeError(f"the upstream received {received} of {len(lines)} lines")
        step(f"ok: a chunked {len(big)} byte body (spooled to a file in /tmp) reached the "
             f"upstream, {received} lines")

        started = time.monotonic()
        docker("stop", "-t", f"{GRACE + 5:g}", self.bridge, timeout=GRACE + 30)
        took = time.monotonic() - started
        code = docker("inspect", "-f", "{{.State.ExitCode}}", self.bridge)
        logs = docker("logs", self.bridge, check=False)
        if code != "0":
            raise RuntimeError(f"docker stop: exit status {code}, expected 0:\n{logs}")
        if took > GRACE:
            raise RuntimeError(f"docker stop took {took:.1f} s, more than the grace {GRACE:g} s")
        wait_for(lambda: "upstream eof" in self.upstream_log(),
                 "the bridge to close its upstream connection", 10)
        step(f"ok: docker stop: exit status 0 after {took:.1f} s (grace {GRACE:g} s), "
             "upstream connection closed by the bridge")
        step("passed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="bridge:local", help="tag to build and test")
    parser.add_argument("--no-build", action="store_true", help="test an existing image")
    args = parser.parse_args()
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        print("container-test: no Docker daemon reachable (docker info failed); "
              "start one, or point DOCKER_HOST at one", file=sys.stderr)
        return 2
    run = Run(args.image, build=not args.no_build)
    try:
        run.main()
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"container-test: FAILED: {error}", file=sys.stderr)
        for name in (run.bridge, run.upstream):
            logs = subprocess.run(["docker", "logs", "--tail", "30", name],
                                  capture_output=True, text=True)
            print(f"--- last log lines of {name}:\n{logs.stdout}{logs.stderr}", file=sys.stderr)
        return 1
    finally:
        run.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
