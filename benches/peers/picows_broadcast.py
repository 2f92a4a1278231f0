"""Peer (c): a plain picows server whose broadcast is a Python loop of `transport.send` per client.

    python -m benches.peers.picows_broadcast

picows' defaults otherwise (16 KiB read buffer, aiofastnet), on uvloop: what a user writing the
obvious picows broadcast server gets.
"""
from __future__ import annotations

import uvloop
from picows import (
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from ..stdin_lines import broadcast_stdin_lines
from .envelope import CONNECTED, JSON_SUBPROTOCOL, envelope, ready_line

raw: set[WSTransport] = set()
wrapped: set[WSTransport] = set()


class Subscriber(WSListener):
    def __init__(self, members: set[WSTransport]):
        self.members = members

    def on_ws_connected(self, transport: WSTransport) -> None:
        if self.members is wrapped:
            transport.send(WSMsgType.TEXT, CONNECTED.encode())
        self.members.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.members.discard(transport)


def accept(request: WSUpgradeRequest) -> Subscriber | WSUpgradeResponseWithListener:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if JSON_SUBPROTOCOL not in offered:
        return Subscriber(raw)
    response = WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": JSON_SUBPROTOCOL})
    return WSUpgradeResponseWithListener(response, Subscriber(wrapped))


def on_line(line: bytes) -> None:
    for transport in raw:
        transport.send(WSMsgType.TEXT, line)
    framed = envelope(line.decode()).encode()
    for transport in wrapped:
        transport.send(WSMsgType.TEXT, framed)


async def main() -> None:
    server = await ws_create_server(accept, "127.0.0.1", 0, backlog=4096)
    print(ready_line(server.sockets[0].getsockname()[1]), flush=True)
    async with server:
        await broadcast_stdin_lines(on_line)


if __name__ == "__main__":
    uvloop.run(main())
