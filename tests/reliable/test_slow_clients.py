"""A client that stops reading is closed once its queue passes the outbound limit; the others are
not held up, and a reliable client gets everything back by recovering."""
from __future__ import annotations

import asyncio
import json

import pytest
import websockets

import fastpush
from tests.conftest import _run_in_thread, _stop
from tests.helpers import JSON_RELIABLE_V1, client_url, connect, eventually

MESSAGES = 600  # 38 MiB in all: more than the kernel's socket buffers can hide
SIZE = 64 * 1024


@pytest.fixture
def server():
    """Its own thread, so the healthy client reads while the server writes, as in real life."""
    running, thread, _ = _run_in_thread(lambda: fastpush.Server(
        port=0, max_outbound_bytes=2 * 1024 * 1024, replay_max_messages=10_000, replay_max_bytes=64 * 1024 * 1024))
    yield running
    _stop(running, thread)


async def _publish(server, make_message) -> None:
    """Send MESSAGES broadcasts from the server thread, a millisecond apart."""
    hub = server.server.hub("h")
    for i in range(MESSAGES):
        await server.acall(lambda i=i: hub.send_to_all(*make_message(i)))
        await asyncio.sleep(0.001)


async def _drain(ws, into: list, decode=json.loads) -> int | None:
    """Read until the socket ends; returns the close code seen (None for a reset)."""
    try:
        while True:
            into.append(decode(await asyncio.wait_for(ws.recv(), 10)))
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def test_slow_reliable_client_is_closed_then_recovers_everything(server):
    view = server
    slow = await websockets.connect(client_url(view, "h"), subprotocols=[JSON_RELIABLE_V1], max_size=None)
    hello = json.loads(await slow.recv())
    fast = await connect(view, "h", JSON_RELIABLE_V1)
    slow.transport.pause_reading()
    body = "x" * SIZE
    fast_seen: list = []

    async def read_fast():
        while len(fast_seen) < MESSAGES:
            fast_seen.append(await fast.recv())
    reader = asyncio.create_task(read_fast())
    await _publish(server, lambda i: ({"n": i, "pad": body},))
    await reader
    assert [m["data"]["n"] for m in fast_seen] == list(range(MESSAGES))
    assert server.server.node.hub("h").slow_client_closes == 1

    slow.transport.resume_reading()
    received: list = []
    await _drain(slow, received)
    last = max((m["sequenceId"] for m in received), default=0)
    assert last < MESSAGES  # it really was cut off
    url = (client_url(view, "h") + f"&awps_connection_id={hello['connectionId']}"
           f"&awps_reconnection_token={hello['reconnectionToken']}")
    again = await websockets.connect(url, subprotocols=[JSON_RELIABLE_V1], max_size=None)
    assert json.loads(await again.recv())["connectionId"] == hello["connectionId"]
    while last < MESSAGES:
        message = json.loads(await asyncio.wait_for(again.recv(), 10))
        if message["sequenceId"] <= last:
            continue  # already seen: the SDKs drop these the same way
        assert message["sequenceId"] == last + 1
        received.append(message)
        last = message["sequenceId"]
    numbers = [m["data"]["n"] for m in received]
    assert numbers == list(range(MESSAGES))
    await again.close()


async def test_slow_raw_client_is_closed_with_1013(server):
    slow = await websockets.connect(client_url(server, "h"), max_size=None)
    slow.transport.pause_reading()
    await _publish(server, lambda i: ("y" * SIZE,))
    slow.transport.resume_reading()
    code = await _drain(slow, [], decode=len)
    assert code == 1013  # the close frame goes ahead of the backlog it could not read
    hub = server.server.node.hub("h")
    assert hub.slow_client_closes == 1
    # the client may see the reset before the server thread has let the connection go
    assert await eventually(lambda: server.acall(lambda: hub.connection_count == 0), 5)
