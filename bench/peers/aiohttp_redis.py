"""What a capable user would write in an afternoon to put Redis behind HTTP.

An aiohttp app with ``POST /request`` in front of Redis through redis-py's
asyncio client (which uses hiredis to parse replies when it is installed):
each body line is one inline command split on blanks (empty lines are
skipped, as Redis skips them); one line is sent with ``execute_command``,
several with a non-transactional pipeline.  The answer has the bridge's
shape for ``--reply-framing resp``: 200 ``{"replies": [...]}`` with bulk
and simple strings as text (invalid UTF-8 replaced), integers as numbers,
nulls as null, arrays as lists, errors as ``{"error": text}``; 502
``upstream_error`` when a reply is an error, 503 when Redis cannot be
reached.  redis-py's response callbacks are cleared so that every reply
is the server's value, as the bridge shows it (``+OK`` is ``"OK"``, not
``True``), and the client speaks RESP2 like the bridge's inline commands.
Two differences no benchmark body shows: arguments are split on blanks
(no quoting), and redis-py drops the ``ERR`` prefix of error messages.  It
prints ``listening on http://HOST:PORT/`` once it accepts
connections.

    python bench/peers/aiohttp_redis.py --listen 127.0.0.1:0 --upstream 127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

MAX_LINE_BYTES = 64 * 1024


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response({"error": code, "message": message, **extra}, status=status,
                             headers=headers)


def value(reply: Any) -> Any:
    """A redis-py value as the bridge's resp framing renders it in JSON."""
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    if isinstance(reply, (list, tuple, set)):
        return [value(item) for item in reply]
    if isinstance(reply, dict):
        return {k if isinstance(k, str) else str(value(k)): value(v) for k, v in reply.items()}
    if isinstance(reply, ResponseError):
        return {"error": str(reply)}
    return reply  # int, float, None, bool, str


async def request(http_request: web.Request) -> web.Response:
    body = await http_request.read()
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
    commands = [args for args in (line.split() for line in lines) if args]
    client: aioredis.Redis = http_request.app["redis"]
    try:
        if len(commands) == 1:
            try:
                replies = [await client.execute_command(*commands[0])]
            except ResponseError as reply:
                replies = [reply]
        elif commands:
            async with client.pipeline(transaction=False) as pipe:
                for args in commands:
                    pipe.execute_command(*args)
                replies = await pipe.execute(raise_on_error=False)
        else:
            replies = []
    except (RedisConnectionError, OSError) as lost:
        return error(503, "upstream_unavailable", f"Redis is not reachable: {lost}")
    except RedisTimeoutError:
        return error(504, "reply_timeout", "Redis did not answer in time")
    shown = [value(reply) for reply in replies]
    if any(isinstance(reply, ResponseError) for reply in replies):
        return error(502, "upstream_error", "the upstream answered with an error reply",
                     replies=shown)
    return web.json_response({"replies": shown})


async def serve(listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    client = aioredis.Redis(host=upstream[0], port=upstream[1], socket_timeout=5.0, protocol=2)
    client.response_callbacks.clear()
    app = web.Application()
    app["redis"] = client
    app.router.add_post("/request", request)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(listen, backlog=1024)
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()[:2]
    print(f"hiredis {'in use' if HIREDIS_AVAILABLE else 'NOT installed'}", flush=True)
    print(f"listening on http://{host}:{port}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await client.aclose()


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
