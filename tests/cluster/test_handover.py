"""A reliable session moving between nodes while messages flow: whatever is published before,
during and after the move reaches the client exactly once, in order."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
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
    comes again, and recover with the last reconnection token, also when the server drops the
    socket (another attempt of this client took the session over)."""

    def __init__(self, hub: str) -> None:
        self.hub = hub
        self.ws = None
        self.seen = 0
        self.data: list[str] = []
        self.connection_id = ""
        self.token = ""
        self.drops = 0

    def take(self, message: dict) -> None:
        if message.get("type") == "system" and message.get("event") == "connected":
            assert self.connection_id in ("", message["connectionId"]), "a new connection, not a recovery"
            self.connection_id, self.token = message["connectionId"], message["reconnectionToken"]
        elif message.get("type") == "message" and message["sequenceId"] > self.seen:
            assert message["sequenceId"] == self.seen + 1, (message, self.seen)
            self.seen = message["sequenceId"]
            self.data.append(message["data"])

    async def connect(self, url: str) -> None:
        self.ws = await _recover(url)
        self.take(json.loads(await self.ws.recv()))

    async def read_for(self, seconds: float, server) -> None:
        """Read for `seconds`; if the socket drops, recover onto `server` and go on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                self.take(json.loads(await asyncio.wait_for(self.ws.recv(), left)))
            except TimeoutError:
                return
            except websockets.ConnectionClosed:
                self.drops += 1
                await self.connect(self.recovery_url(server))

    def recovery_url(self, server) -> str:
        return client_url(server, self.hub) + (f"&awps_connection_id={self.connection_id}"
                                               f"&awps_reconnection_token={self.token}")


async def _abandoned_recovery(url: str) -> None:
    """A recovery's upgrade request, sent, and the socket closed a moment later without reading
    the answer: a client that gave up on an attempt while the server moves its session."""
    host, port, target = _split(url)
    _, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Protocol: {JSON_RELIABLE_V1}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.002)
    writer.close()


def _split(url: str) -> tuple[str, int, str]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    return host, int(port), "/" + path


async def _recover(url: str):
    """Recover as the SDKs do: a refused attempt (503: the session is between nodes) is tried again."""
    for _ in range(50):
        try:
            return await websockets.connect(url, subprotocols=[JSON_RELIABLE_V1])
        except websockets.InvalidStatus as refused:
            assert refused.response.status_code == 503, refused
            await asyncio.sleep(0.05)
    raise AssertionError("the session stayed unreachable")


# abort: the socket drops; ack-then-abort: after acknowledging what it has; abandon-here and
# abandon-elsewhere: an attempt to the same node, or to the other one, is given up while the one
# that counts starts: the session may be moving onto either node when the other asks for it.
@pytest.mark.parametrize("cut", ["abort", "ack-then-abort", "abandon-here", "abandon-elsewhere"])
async def test_a_session_moved_back_and_forth_under_load_gets_everything_once_in_order(cluster, hub_name, cut):
    first, publisher_node, second = cluster
    hub_api = publisher_node.server.hub(hub_name)
    stop = threading.Event()
    reader = ReliableReader(hub_name)
    await reader.connect(client_url(first, hub_name, groups=["g"]))
    publishing = asyncio.run_coroutine_threadsafe(_publish(hub_api, "g", stop), publisher_node.loop)
    try:
        for move in range(MOVES):
            target, other = (second, first) if move % 2 == 0 else (first, second)
            await reader.read_for(0.05, other)
            if cut == "ack-then-abort":
                with contextlib.suppress(websockets.ConnectionClosed):
                    await reader.ws.send(json.dumps({"type": "sequenceAck", "sequenceId": reader.seen}))
            reader.ws.transport.abort()
            abandoned = None
            if cut.startswith("abandon"):
                given_up = target if cut == "abandon-here" else other
                abandoned = asyncio.create_task(_abandoned_recovery(reader.recovery_url(given_up)))
            await reader.connect(reader.recovery_url(target))
            if abandoned is not None:
                await abandoned
    finally:
        stop.set()
    sent = await asyncio.wrap_future(publishing)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(reader.data) < sent and loop.time() < deadline:
        await reader.read_for(0.2, first)
    await reader.ws.close()
    missing = sorted(set(range(sent)) - {int(d) for d in reader.data}, key=int)
    assert not missing, f"{len(missing)} of {sent} messages never arrived ({reader.drops} drops): {missing[:20]}"
    assert reader.data == [str(n) for n in range(sent)]
