"""A reliable session moving between nodes while messages flow: whatever is published before,
during and after the move reaches the client exactly once, in order."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading

import pytest
import websockets

from tests.helpers import JSON_RELIABLE_V1, client_url

MOVES = 12
GAP_SECONDS = 0.002  # between two sends of the publisher: many sends fall inside each move


async def _publish(hub_api, group: str, stop: threading.Event) -> int:
    """On the publisher node's loop: numbered sends, one after another, until told to stop."""
    sent = 0
    while not stop.is_set() or sent == 0:
        await hub_api.send_to_group(group, str(sent), content_type="text/plain")
        sent += 1
        await asyncio.sleep(GAP_SECONDS)
    return sent


class ReliableReader:
    """What the SDKs do with a reliable connection: keep the highest sequenceId seen, drop what
    comes again, acknowledge now and then, and recover with the last reconnection token."""

    def __init__(self) -> None:
        self.seen = 0
        self.data: list[str] = []
        self.connection_id = ""
        self.token = ""

    def take(self, message: dict) -> None:
        if message.get("type") == "system" and message.get("event") == "connected":
            self.connection_id, self.token = message["connectionId"], message["reconnectionToken"]
        elif message.get("type") == "message" and message["sequenceId"] > self.seen:
            assert message["sequenceId"] == self.seen + 1, (message, self.seen)
            self.seen = message["sequenceId"]
            self.data.append(message["data"])

    async def read_for(self, ws, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                self.take(json.loads(await asyncio.wait_for(ws.recv(), left)))
            except TimeoutError:
                return

    def recovery_url(self, server, hub: str) -> str:
        return client_url(server, hub) + (f"&awps_connection_id={self.connection_id}"
                                          f"&awps_reconnection_token={self.token}")


def _abandoned_recovery(url: str) -> None:
    """A recovery's upgrade request, sent, and the socket closed without waiting for the answer:
    what a client does that gives up on an attempt (the server is then moving its session)."""
    host, port, target = _split(url)
    with socket.create_connection((host, port), timeout=5) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                     f"Sec-WebSocket-Protocol: {JSON_RELIABLE_V1}\r\n\r\n".encode())


def _split(url: str) -> tuple[str, int, str]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    return host, int(port), "/" + path


@pytest.mark.parametrize("cut", ["abort", "ack-then-abort", "abandon-then-recover"])
async def test_a_session_moved_back_and_forth_under_load_gets_everything_once_in_order(cluster, hub_name, cut):
    first, publisher_node, second = cluster
    hub_api = publisher_node.server.hub(hub_name)
    stop = threading.Event()
    reader = ReliableReader()
    ws = await websockets.connect(client_url(first, hub_name, groups=["g"]), subprotocols=[JSON_RELIABLE_V1])
    reader.take(json.loads(await ws.recv()))
    publishing = asyncio.run_coroutine_threadsafe(_publish(hub_api, "g", stop), publisher_node.loop)
    try:
        for move in range(MOVES):
            await reader.read_for(ws, 0.05)
            if cut == "ack-then-abort":
                await ws.send(json.dumps({"type": "sequenceAck", "sequenceId": reader.seen}))
            ws.transport.abort()
            target = second if move % 2 == 0 else first
            if cut == "abandon-then-recover":
                await asyncio.to_thread(_abandoned_recovery, reader.recovery_url(target, hub_name))
            ws = await websockets.connect(reader.recovery_url(target, hub_name), subprotocols=[JSON_RELIABLE_V1])
            hello = json.loads(await ws.recv())
            assert hello.get("event") == "connected" and hello["connectionId"] == reader.connection_id, hello
            reader.take(hello)
    finally:
        stop.set()
    sent = await asyncio.wrap_future(publishing)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(reader.data) < sent and loop.time() < deadline:
        await reader.read_for(ws, 0.2)
    await ws.close()
    missing = sorted(set(range(sent)) - {int(d) for d in reader.data}, key=int)
    assert not missing, f"{len(missing)} of {sent} messages never arrived: {missing[:20]}"
    assert reader.data == [str(n) for n in range(sent)]
