"""Messages sent through REST with messageTtlSeconds, to reliable clients on real sockets: a client
that stops reading, one whose socket drops, one too slow to keep; none of them ever gets a message
after it expired, every later one arrives, and the sequenceIds they see have no gap (what expired
before reaching a socket gives its number to the next message)."""
from __future__ import annotations

import asyncio
import http.client
import json
import time
import uuid

import jwt
import pytest
import websockets

import fastpush
from tests.conftest import _run_in_thread, _stop
from tests.helpers import JSON_RELIABLE_V1, client_url, eventually
from tests.webpubsub_proto import Downstream, Upstream

PB_RELIABLE_V1 = "protobuf.reliable.webpubsub.azure.v1"
FILLER = "x" * (64 * 1024)
TTL = 1  # seconds, the shortest a TTL can be


@pytest.fixture(scope="module")
def server():
    """In a thread of its own, so it goes on writing while a test's client does not read."""
    running, thread, _ = _run_in_thread(lambda: fastpush.Server(
        port=0, max_outbound_bytes=8 * 1024 * 1024, replay_max_messages=10_000, replay_max_bytes=256 * 1024 * 1024))
    yield running
    _stop(running, thread)


@pytest.fixture
def hub() -> str:
    return "ttl_" + uuid.uuid4().hex[:12]


def _rest_send(server, hub: str, text: str, ttl: int | None = None) -> float:
    """POST /:send as the SDKs do; returns the wall-clock time by which the message has expired."""
    target = f"/api/hubs/{hub}/:send?api-version=2024-12-01" + (f"&messageTtlSeconds={ttl}" if ttl is not None else "")
    token = jwt.encode({"aud": server.endpoint + target, "exp": int(time.time()) + 60}, server.access_key.encode(),
                       algorithm="HS256")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", target, body=text.encode(),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
        response = conn.getresponse()
        response.read()
        assert response.status == 202
    finally:
        conn.close()
    return time.time() + (ttl or 0)


async def send(server, hub: str, text: str, ttl: int | None = None) -> float:
    return await asyncio.to_thread(_rest_send, server, hub, text, ttl)


async def past(wall_time: float) -> None:
    """Wait until the wall clock has passed `wall_time`: a message expiring then has expired on the
    server (it compares a deadline taken from the same clock)."""
    await asyncio.sleep(max(0.0, wall_time - time.time()) + 0.05)


def _connection(server, hub: str, connection_id: str):
    return server.server.node.hub(hub).tables.connections.get(connection_id)


async def fill_until_paused(server, hub: str, connection_id: str) -> int:
    """Send 64 KiB messages until the server holds frames for this client in its own queue (the
    kernel's and the transport's buffers are full); how many it took."""
    sent = 0
    while not await server.acall(lambda: _connection(server, hub, connection_id).paused):
        assert sent < 400, "25 MiB sent and the socket never backed up"
        await send(server, hub, FILLER)
        sent += 1
    return sent


class Reader:
    """A reliable client's messages, by subprotocol: (sequenceId, text) of each data message."""

    def __init__(self, subprotocol: str):
        self.subprotocol = subprotocol

    def decode(self, frame: str | bytes) -> dict:
        if self.subprotocol == JSON_RELIABLE_V1:
            return json.loads(frame)
        message = Downstream.FromString(frame)
        if message.HasField("data_message"):
            data = message.data_message
            return {"type": "message", "sequenceId": data.sequence_id, "data": data.data.text_data}
        if message.HasField("system_message"):
            hello = message.system_message.connected_message
            return {"type": "system", "connectionId": hello.connection_id,
                    "reconnectionToken": hello.reconnection_token}
        return {"type": "other"}

    async def next(self, ws) -> dict:
        return self.decode(await asyncio.wait_for(ws.recv(), 10))

    async def until(self, ws, text: str, into: list[tuple[int, str]]) -> None:
        """Read data messages into `into` until one holds `text`."""
        while True:
            message = await self.next(ws)
            if message["type"] == "message":
                into.append((message["sequenceId"], message["data"]))
                if message["data"] == text:
                    return

    def sequence_ack(self, sequence_id: int) -> str | bytes:
        if self.subprotocol == JSON_RELIABLE_V1:
            return json.dumps({"type": "sequenceAck", "sequenceId": sequence_id})
        ack = Upstream()
        ack.sequence_ack_message.sequence_id = sequence_id
        return ack.SerializeToString()


def recovery_url(server, hub: str, hello: dict) -> str:
    return (client_url(server, hub) + f"&awps_connection_id={hello['connectionId']}"
            f"&awps_reconnection_token={hello['reconnectionToken']}")


@pytest.mark.parametrize("subprotocol", [JSON_RELIABLE_V1, PB_RELIABLE_V1], ids=["json", "protobuf"])
async def test_a_client_that_stops_reading_never_gets_what_expired_meanwhile(server, hub, subprotocol):
    reader = Reader(subprotocol)
    ws = await websockets.connect(client_url(server, hub), subprotocols=[subprotocol], max_size=None)
    hello = await reader.next(ws)
    ws.transport.pause_reading()
    fillers = await fill_until_paused(server, hub, hello["connectionId"])
    expired = await send(server, hub, "stale", TTL)
    await send(server, hub, "fresh", 300)
    await send(server, hub, "plain")
    await past(expired)

    ws.transport.resume_reading()
    received: list[tuple[int, str]] = []
    await reader.until(ws, "plain", received)
    assert [text for _, text in received] == [FILLER] * fillers + ["fresh", "plain"]
    assert [number for number, _ in received] == list(range(1, fillers + 3))  # contiguous

    await ws.send(reader.sequence_ack(fillers + 2))
    await send(server, hub, "later")
    await reader.until(ws, "later", received)
    assert received[-1] == (fillers + 3, "later")
    await ws.close()


async def test_a_client_whose_socket_dropped_recovers_without_what_expired(server, hub):
    reader = Reader(JSON_RELIABLE_V1)
    ws = await websockets.connect(client_url(server, hub), subprotocols=[JSON_RELIABLE_V1])
    hello = await reader.next(ws)
    await send(server, hub, "one")
    assert (await reader.next(ws))["sequenceId"] == 1
    await ws.send(reader.sequence_ack(1))
    ws.transport.abort()  # the network drops it: no close frame
    assert await eventually(lambda: server.acall(lambda: _connection(server, hub, hello["connectionId"]).is_lost))

    expired = await send(server, hub, "stale", TTL)
    await send(server, hub, "two")
    await send(server, hub, "stale too", TTL)
    await past(expired + 0.1)
    await send(server, hub, "three", 300)

    again = await websockets.connect(recovery_url(server, hub, hello), subprotocols=[JSON_RELIABLE_V1])
    assert (await reader.next(again))["connectionId"] == hello["connectionId"]
    received: list[tuple[int, str]] = []
    await reader.until(again, "three", received)
    assert received == [(2, "two"), (3, "three")]
    await send(server, hub, "four")
    await reader.until(again, "four", received)
    assert received[-1] == (4, "four")
    await again.close()


async def test_a_client_too_slow_to_keep_recovers_without_what_expired_in_its_queue(server, hub):
    """Past --max-outbound-bytes the queue is dropped and the client closed (1013); it recovers
    what it missed from its replay buffer, and what expired in that queue is not among it."""
    reader = Reader(JSON_RELIABLE_V1)
    ws = await websockets.connect(client_url(server, hub), subprotocols=[JSON_RELIABLE_V1], max_size=None)
    hello = await reader.next(ws)
    ws.transport.pause_reading()
    fillers = await fill_until_paused(server, hub, hello["connectionId"])
    expired = await send(server, hub, "stale", TTL)
    sent_after = 0
    while await server.acall(lambda: _connection(server, hub, hello["connectionId"]).close_code) != 1013:
        assert sent_after < 200, "12 MiB more and it was never closed as too slow"
        await send(server, hub, FILLER)
        sent_after += 1
    await past(expired)
    await send(server, hub, "last")

    ws.transport.resume_reading()
    received: list[tuple[int, str]] = []
    try:
        while True:
            message = await reader.next(ws)
            if message["type"] == "message":
                received.append((message["sequenceId"], message["data"]))
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 1013
    last = received[-1][0] if received else 0
    assert [number for number, _ in received] == list(range(1, last + 1))

    again = await websockets.connect(recovery_url(server, hub, hello), subprotocols=[JSON_RELIABLE_V1],
                                     max_size=None)
    assert (await reader.next(again))["connectionId"] == hello["connectionId"]
    resent: list[tuple[int, str]] = []
    await reader.until(again, "last", resent)
    fresh = [(number, text) for number, text in resent if number > last]  # the SDKs drop the others
    assert [number for number, _ in fresh] == list(range(last + 1, last + 1 + len(fresh)))
    texts = [text for _, text in received] + [text for _, text in fresh]
    assert texts == [FILLER] * (fillers + sent_after) + ["last"]
    await again.close()
