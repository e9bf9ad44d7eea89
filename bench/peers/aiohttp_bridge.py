"""What a capable user would write in an afternoon instead of the bridge.

An aiohttp app with ``POST /send``: one persistent upstream connection
(reconnected with a capped backoff), one write per request, ``drain()`` once
more than 1 MiB waits to be sent, 503 while disconnected, and the same body
rules as the bridge's text bodies (LF or CRLF line ends, no bare CR, lines of
at most 64 KiB, CRLF written upstream).  It prints
``listening on http://HOST:PORT/`` once it accepts connections.

    python bench/peers/aiohttp_bridge.py --listen 127.0.0.1:0 --upstream 127.0.0.1:6000
"""

from __future__ import annotations

import argparse
import asyncio
import socket

from aiohttp import web

MAX_LINE_BYTES = 64 * 1024
HIGH_WATER = 1024 * 1024


class Upstream:
    """One persistent connection; ``writer`` is None while disconnected."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            writer.transport.set_write_buffer_limits(high=HIGH_WATER)
            self.writer = writer
            try:
                while await reader.read(65536):
                    pass  # replies to /send lines are not wanted
            except OSError:
                pass
            finally:
                self.writer = None
                writer.close()


def error(status: int, code: str, message: str) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response({"error": code, "message": message}, status=status,
                             headers=headers)


async def send(request: web.Request) -> web.Response:
    body = await request.read()
    upstream: Upstream = request.app["upstream"]
    writer = upstream.writer
    if writer is None or writer.is_closing():
        return error(503, "upstream_unavailable", "the upstream is not connected")
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
        if b"\r" in body:
            return error(400, "bare_cr", "the body contains a CR not followed by LF")
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if not lines:
        return error(400, "empty_body", "send at least one line")
    if max(map(len, lines)) > MAX_LINE_BYTES:
        return error(413, "line_too_long", f"lines are limited to {MAX_LINE_BYTES} bytes")
    writer.write(b"\r\n".join(lines) + b"\r\n")
    await writer.drain()  # returns at once unless more than HIGH_WATER is buffered
    return web.json_response({"sent": len(lines)}, status=202)


async def serve(listen: tuple[str, int], upstream_address: tuple[str, int]) -> None:
    upstream = Upstream(*upstream_address)
    app = web.Application()
    app["upstream"] = upstream
    app.router.add_post("/send", send)
    task = asyncio.create_task(upstream.run())
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(listen, backlog=1024)
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()[:2]
    print(f"listening on http://{host}:{port}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        task.cancel()
        await runner.cleanup()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=address, default=("127.0.0.1", 8080))
    parser.add_argument("--upstream", type=address, required=True)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.listen, args.upstream))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
