"""Peer (a): the `websockets` library's own `broadcast()`, on uvloop.

    python -m benches.peers.websockets_broadcast

Keep-alive pings and compression are off, as in the other servers under test.
"""
from __future__ import annotations

from collections.abc import Sequence

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.typing import Subprotocol

from ..stdin_lines import broadcast_stdin_lines
from .envelope import CONNECTED, JSON_SUBPROTOCOL, envelope, ready_line

raw: set[ServerConnection] = set()
wrapped: set[ServerConnection] = set()


async def subscriber(ws: ServerConnection) -> None:
    members = wrapped if ws.subprotocol == JSON_SUBPROTOCOL else raw
    if members is wrapped:
        await ws.send(CONNECTED)
    members.add(ws)
    try:
        await ws.wait_closed()
    finally:
        members.discard(ws)


def select_subprotocol(ws: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """The JSON subprotocol when offered; raw otherwise (websockets' default would answer 400)."""
    return Subprotocol(JSON_SUBPROTOCOL) if JSON_SUBPROTOCOL in offered else None


def on_line(line: bytes) -> None:
    text = line.decode()
    broadcast(raw, text)
    broadcast(wrapped, envelope(text))


async def main() -> None:
    async with serve(subscriber, "127.0.0.1", 0, select_subprotocol=select_subprotocol, compression=None,
                     ping_interval=None, max_size=65536, backlog=4096) as server:
        print(ready_line(server.sockets[0].getsockname()[1]), flush=True)
        await broadcast_stdin_lines(on_line)


if __name__ == "__main__":
    uvloop.run(main())
