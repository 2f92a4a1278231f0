"""Conflation (config `conflateGroups`): a client that stops reading is not closed for traffic to
conflated groups; when it reads again it gets each group's latest value, a reliable client with
contiguous sequenceIds (also after recovering a dropped socket); a healthy member of the same
groups gets everything; traffic to other groups still closes the slow one 1013;
`maxMessagesPerSecond` caps what one connection gets of one group."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import websockets
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubProtocolType

import fastpush
from fastpush.config import Config, HubSettings
from tests.conftest import _run_in_thread, _stop
from tests.fault_proxy import FaultProxy
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, client_url, eventually

GROUPS = [f"prices.s{i}" for i in range(4)]
MESSAGES = 2000  # 32 MiB in all: far more than the kernel's socket buffers hide
SIZE = 16 * 1024
MAX_OUTBOUND = 8 * 1024 * 1024  # conflation starts at 1 MiB queued (LOW_WATER_DIVISOR 8)
RATE = 5.0


@pytest.fixture
def server():
    """Its own thread, so the healthy client reads while the server writes, as in real life."""
    config = Config(hubs={"h": HubSettings(conflate_groups=["prices.*"]),
                          "r": HubSettings(conflate_groups=["prices.*"], max_messages_per_second=RATE)})
    running, thread, _ = _run_in_thread(lambda: fastpush.Server(
        port=0, max_outbound_bytes=MAX_OUTBOUND, replay_max_messages=10_000, replay_max_bytes=64 * 1024 * 1024,
        config=config))
    yield running
    _stop(running, thread)


async def _publish(server, count: int, first: int = 0, hub: str = "h", pad: int = SIZE, pause: float = 0.001,
                   to_all_every: int = 0, ttl: int = 0) -> None:
    """`count` sends round the groups from the server's own loop, `pause` apart; message n goes to
    GROUPS[n % 4] (and every `to_all_every`-th is a broadcast to the hub instead)."""
    handle = server.server.hub(hub)
    body = "x" * pad

    async def run():
        for n in range(first, first + count):
            if to_all_every and n % to_all_every == 0:
                await handle.send_to_all({"n": n, "pad": body})
            else:
                await handle.send_to_group(GROUPS[n % 4], {"n": n, "pad": body}, message_ttl_seconds=ttl)
            await asyncio.sleep(pause)
    await server.acall(run)


def _finals(last: int) -> dict[str, int]:
    """The last n each group was sent, when 0..last were sent."""
    return {GROUPS[n % 4]: n for n in range(max(0, last - 3), last + 1)}


class Reader:
    """Reads a websocket into `seen` in the background; `ended` holds its close code."""

    def __init__(self, ws):
        self.ws = ws
        self.seen: list[dict] = []
        self.ended: int | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for frame in self.ws:
                message = json.loads(frame)
                if message.get("type") == "message":
                    self.seen.append(message)
        except websockets.ConnectionClosed as closed:
            self.ended = closed.rcvd.code if closed.rcvd else -1
        else:
            self.ended = self.ws.close_code

    def latest(self) -> dict[str, int]:
        return {m["group"]: m["data"]["n"] for m in self.seen}

    async def stop(self) -> None:
        await self.ws.close()
        await self.task


async def _open(server, subprotocol: str, url: str | None = None):
    ws = await websockets.connect(url or client_url(server, "h", groups=GROUPS), subprotocols=[subprotocol],
                                  max_size=None)
    hello = json.loads(await ws.recv())
    assert hello["event"] == "connected"
    return ws, hello


def _per_group_increasing(seen: list[dict]) -> bool:
    last: dict[str, int] = {}
    for m in seen:
        n = m["data"]["n"]
        if n <= last.get(m["group"], -1):
            return False
        last[m["group"]] = n
    return True


@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
async def test_slow_reader_gets_latest_values_and_stays(server, subprotocol):
    slow_ws, _ = await _open(server, subprotocol)
    slow_ws.transport.pause_reading()
    fast = Reader((await _open(server, subprotocol))[0])
    await _publish(server, MESSAGES)
    assert await eventually(lambda: len(fast.seen) == MESSAGES, 30)
    assert [m["data"]["n"] for m in fast.seen] == list(range(MESSAGES))
    hub = server.server.node.hub("h")
    assert hub.slow_client_closes == 0

    slow_ws.transport.resume_reading()
    slow = Reader(slow_ws)
    assert await eventually(lambda: slow.latest() == _finals(MESSAGES - 1), 30), slow.latest()
    assert len(slow.seen) < MESSAGES  # it really was conflated
    assert _per_group_increasing(slow.seen)
    if subprotocol == JSON_RELIABLE_V1:
        assert [m["sequenceId"] for m in slow.seen] == list(range(1, len(slow.seen) + 1))
    # still open, and live again: the next message arrives as it is sent
    await _publish(server, 1, first=MESSAGES)
    assert await eventually(lambda: slow.latest().get(GROUPS[MESSAGES % 4]) == MESSAGES)
    assert slow.ended is None and hub.slow_client_closes == 0
    await slow.stop()
    await fast.stop()


@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
async def test_expired_waiting_value_is_dropped(server, subprotocol):
    ws, _ = await _open(server, subprotocol)
    ws.transport.pause_reading()
    await _publish(server, MESSAGES, ttl=1)
    expired_at = time.monotonic() + 1.2  # each group's latest value waits: its TTL runs out meanwhile
    await asyncio.sleep(max(0.0, expired_at - time.monotonic()))
    ws.transport.resume_reading()
    reader = Reader(ws)
    await _publish(server, 1, first=MESSAGES)  # no TTL: written after whatever still waited
    assert await eventually(lambda: reader.latest().get(GROUPS[0]) == MESSAGES, 30)
    assert not {m["data"]["n"] for m in reader.seen} & set(range(MESSAGES - 4, MESSAGES))
    if subprotocol == JSON_RELIABLE_V1:
        assert [m["sequenceId"] for m in reader.seen] == list(range(1, len(reader.seen) + 1))
    assert server.server.node.hub("h").slow_client_closes == 0
    await reader.stop()


async def test_reliable_slow_reader_recovers_after_a_dropped_socket(server):
    ws, hello = await _open(server, JSON_RELIABLE_V1)
    ws.transport.pause_reading()
    await _publish(server, MESSAGES)
    conn = server.server.node.hub("h").connection(hello["connectionId"])
    ws.transport.abort()  # a network drop: nothing read, no close frame
    assert await eventually(lambda: not conn.is_open)
    await _publish(server, 8, first=MESSAGES)  # while it is away
    url = (client_url(server, "h") + f"&awps_connection_id={hello['connectionId']}"
           f"&awps_reconnection_token={hello['reconnectionToken']}")
    again, back = await _open(server, JSON_RELIABLE_V1, url)
    assert back["connectionId"] == hello["connectionId"]
    reader = Reader(again)
    assert await eventually(lambda: reader.latest() == _finals(MESSAGES + 7), 30), reader.latest()
    assert [m["sequenceId"] for m in reader.seen] == list(range(1, len(reader.seen) + 1))
    assert len(reader.seen) < MESSAGES
    assert _per_group_increasing(reader.seen)
    assert server.server.node.hub("h").slow_client_closes == 0
    await reader.stop()


async def test_other_traffic_still_closes_a_slow_reader_1013(server):
    ws, _ = await _open(server, JSON_V1)
    ws.transport.pause_reading()
    fast = Reader((await _open(server, JSON_V1))[0])
    await _publish(server, MESSAGES, to_all_every=2)  # half of it to the whole hub: not conflated
    hub = server.server.node.hub("h")
    assert await eventually(lambda: hub.slow_client_closes == 1, 30)
    assert await eventually(lambda: len(fast.seen) == MESSAGES, 30)
    ws.transport.resume_reading()
    slow = Reader(ws)
    await asyncio.wait_for(slow.task, 30)
    assert slow.ended == 1013
    await fast.stop()


async def test_max_messages_per_second_per_group(server):
    ws, _ = await _open(server, JSON_V1, client_url(server, "r", groups=GROUPS[:1]))
    reader = Reader(ws)
    started = time.monotonic()
    last = 4 * 199  # 200 sends to GROUPS[0], 5 ms apart: 1 s and more
    publisher = asyncio.create_task(_publish(server, last + 1, hub="r", pad=10, pause=0.00125))
    assert await eventually(lambda: reader.latest().get(GROUPS[0]) == last, 30), reader.latest()
    elapsed = time.monotonic() - started
    await publisher
    # at most one message per 1/RATE seconds since the first: however slow this machine was
    assert len(reader.seen) <= 1 + RATE * elapsed, (len(reader.seen), elapsed)
    assert len(reader.seen) < 200
    assert _per_group_increasing(reader.seen)
    await reader.stop()


async def test_paused_python_sdk_client_gets_latest_values(server):
    """The Python SDK (reliable JSON, its own acks) behind a proxy that stops carrying bytes."""
    proxy = await FaultProxy(server.port).start()
    url = client_url(server, "h", groups=GROUPS).replace(f":{server.port}/", f":{proxy.port}/")
    received: list[tuple[str, int, int | None]] = []
    events: list[str] = []
    lock = threading.Lock()

    def on_group_message(args) -> None:
        with lock:
            received.append((args.group, args.data["n"], args.sequence_id))

    sdk = WebPubSubClient(credential=WebPubSubClientCredential(client_access_url_provider=lambda: url),
                          protocol_type=WebPubSubProtocolType.JSON_RELIABLE)
    sdk.subscribe(CallbackType.GROUP_MESSAGE, on_group_message)
    sdk.subscribe(CallbackType.DISCONNECTED, lambda args: events.append("disconnected"))
    await asyncio.to_thread(sdk.open)
    try:
        fast = Reader((await _open(server, JSON_V1))[0])
        proxy.hold()
        await _publish(server, MESSAGES)
        assert await eventually(lambda: len(fast.seen) == MESSAGES, 30)
        proxy.release()

        def done() -> bool:
            with lock:
                return {g: n for g, n, _ in received} == _finals(MESSAGES - 1)
        assert await eventually(done, 30)
        with lock:
            seen = list(received)
        assert len(seen) < MESSAGES
        assert [s for _, _, s in seen] == list(range(1, len(seen) + 1))
        assert events == [] and server.server.node.hub("h").slow_client_closes == 0
        assert proxy.accepted == 1  # never reconnected
        await fast.stop()
    finally:
        await asyncio.to_thread(sdk.close)
        await proxy.stop()
