"""Nothing lost across network faults: 10,000 numbered messages through REST while a proxy cuts
the client's connection at random moments and stalls it once; a hand-written reliable client
(the SDKs' rules: sequenceAck every 200 ms, recover with awps_connection_id/token, drop ids it has
seen) must end with every message exactly once, in order."""
from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
import websockets

import fastpush
from tests.conftest import _run_in_thread, _stop
from tests.fault_proxy import FaultProxy
from tests.helpers import JSON_RELIABLE_V1, client_token, publish_numbered

MESSAGES = 10_000
PUBLISH_RATE = 800.0  # messages a second at most (what the server fixture sizes its replay buffer for)
CUTS = 5
DEADLINE = 120.0


@pytest.fixture
def server():
    """A stall of ~5 s at ~800 messages/s needs room for ~4,000 unacknowledged messages: more
    than the default 1,000 (Azure's), so this deployment raises it, as a ticker's would."""
    running, thread, _ = _run_in_thread(lambda: fastpush.Server(port=0, replay_max_messages=10_000))
    yield running
    _stop(running, thread)



class ReliableClient:
    """The reliable JSON protocol by hand, as the official SDKs speak it."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.connection_id: str | None = None
        self.token: str | None = None
        self.last = 0
        self.data: list[str] = []
        self.duplicates = 0
        self.connects = 0
        self.recoveries = 0

    async def run(self, until_count: int, deadline: float) -> None:
        while len(self.data) < until_count and time.monotonic() < deadline:
            url = self.base_url
            if self.connection_id:
                url += f"&awps_connection_id={self.connection_id}&awps_reconnection_token={self.token}"
            try:
                async with websockets.connect(url, subprotocols=[JSON_RELIABLE_V1], open_timeout=3,
                                              close_timeout=1, ping_interval=None) as ws:
                    self.connects += 1
                    await self._session(ws, until_count, deadline)
            except websockets.ConnectionClosed as closed:
                assert not (closed.rcvd and closed.rcvd.code == 1008), f"recovery refused: {closed.rcvd}"
            except (TimeoutError, OSError, websockets.InvalidHandshake):
                await asyncio.sleep(0.1)

    async def _session(self, ws, until_count: int, deadline: float) -> None:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 3))
        assert hello["type"] == "system" and hello["event"] == "connected"
        if self.connection_id is not None:
            assert hello["connectionId"] == self.connection_id
            self.recoveries += 1
        self.connection_id, self.token = hello["connectionId"], hello["reconnectionToken"]
        acker = asyncio.create_task(self._ack_every(ws, 0.2))
        try:
            while len(self.data) < until_count and time.monotonic() < deadline:
                # A stalled link shows as silence: give up on this socket after 2 s, as a keepalive would.
                message = json.loads(await asyncio.wait_for(ws.recv(), 2))
                seq = message["sequenceId"]
                if seq <= self.last:
                    self.duplicates += 1
                    continue
                assert seq == self.last + 1, f"gap: {self.last} -> {seq}"
                self.last = seq
                self.data.append(message["data"])
        except TimeoutError:
            ws.transport.abort()
        finally:
            acker.cancel()

    async def _ack_every(self, ws, seconds: float) -> None:
        sent = 0
        while True:
            await asyncio.sleep(seconds)
            if self.last != sent:
                sent = self.last
                await ws.send(json.dumps({"type": "sequenceAck", "sequenceId": sent}))


async def test_ten_thousand_messages_through_cuts_and_a_stall(server):
    hub = "faults"
    proxy = await FaultProxy(server.port).start()
    token = client_token(server.access_key, server.endpoint, hub)
    client = ReliableClient(f"ws://127.0.0.1:{proxy.port}/client/hubs/{hub}?access_token={token}")
    deadline = time.monotonic() + DEADLINE
    consumer = asyncio.create_task(client.run(MESSAGES, deadline))
    while client.connection_id is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop: list = []
    publisher = asyncio.create_task(asyncio.to_thread(publish_numbered, server, hub, MESSAGES, stop, PUBLISH_RATE))
    rng = random.Random(20261128)
    try:
        for i in range(CUTS):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            await proxy.wait_connected(deadline)  # so that every cut hits a live connection
            proxy.cut()
            if i == 2:
                await asyncio.sleep(0.3)
                await proxy.stall(3.0)  # silence without a close: the client must notice and recover
        await publisher
        await asyncio.wait_for(consumer, DEADLINE)
    finally:
        stop.append(True)
        await proxy.stop()
    print(f"\nfault recovery: messages={len(client.data)} cuts={proxy.cuts} connects={client.connects} "
          f"recoveries={client.recoveries} resent-and-dropped={client.duplicates}")
    assert client.data == [str(n) for n in range(MESSAGES)]  # each exactly once, in order
    assert proxy.cuts >= CUTS and client.recoveries >= CUTS
