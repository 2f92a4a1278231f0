"""A client that joins many conflated groups and never reads costs the server at most one waiting
message per group it is in (and its queue up to the low-water mark), however much is sent to
them, and however it churns its groups meanwhile; it is never closed for that traffic."""
from __future__ import annotations

import asyncio
import json

import pytest
import websockets

import fastpush
from fastpush.config import Config, HubSettings
from fastpush.conflation import LOW_WATER_DIVISOR
from tests.helpers import JSON_V1, ServerView, client_url, eventually

GROUPS = 100
SIZE = 16 * 1024
MAX_OUTBOUND = 1024 * 1024


@pytest.fixture
async def server():
    config = Config(hubs={"h": HubSettings(conflate_groups=["prices.**"])})
    async with fastpush.Server(port=0, config=config, max_outbound_bytes=MAX_OUTBOUND,
                               max_groups_per_connection=GROUPS) as srv:
        yield srv


def _waiting(conn) -> dict:
    state = conn.conflation
    return {} if state is None else state.latest


async def _flood(server, groups: list[str], rounds: int) -> None:
    hub, body = server.hub("h"), "x" * SIZE
    for r in range(rounds):
        for group in groups:
            await hub.send_to_group(group, {"r": r, "pad": body})
        await asyncio.sleep(0)  # let the socket's buffer fill and the writes pause


async def test_never_reading_member_of_many_conflated_groups_stays_bounded(server):
    view = ServerView.of(server)
    ws = await websockets.connect(client_url(view, "h", roles=["webpubsub.joinLeaveGroup"]),
                                  subprotocols=[JSON_V1], max_size=None)
    hello = json.loads(await ws.recv())
    first = [f"prices.a.{i}" for i in range(GROUPS)]
    for ack_id, group in enumerate(first, 1):
        await ws.send(json.dumps({"type": "joinGroup", "group": group, "ackId": ack_id}))
    hub = server.node.hub("h")
    conn = hub.connection(hello["connectionId"])
    assert await eventually(lambda: len(conn.groups) == GROUPS)
    ws.transport.pause_reading()  # from now on it never reads

    worst = 0
    for _ in range(8):  # 8 x 100 x 16 KiB x 5: 64 MiB sent its way
        await _flood(server, first, 5)
        worst = max(worst, len(_waiting(conn)))
        assert conn.queued_bytes <= MAX_OUTBOUND // LOW_WATER_DIVISOR + SIZE + 512
    assert conn.paused and _waiting(conn)  # it really is conflated
    assert worst <= GROUPS

    # churn: leave every group while their values wait, join as many new ones, flood those
    second = [f"prices.b.{i}" for i in range(GROUPS)]
    for group in first:
        await ws.send(json.dumps({"type": "leaveGroup", "group": group}))
    for group in second:
        await ws.send(json.dumps({"type": "joinGroup", "group": group}))
    assert await eventually(lambda: set(conn.groups) == set(second))
    await _flood(server, second, 5)
    waiting = _waiting(conn)
    assert len(waiting) <= GROUPS and set(waiting) <= set(second)
    assert conn.queued_bytes <= MAX_OUTBOUND // LOW_WATER_DIVISOR + SIZE + 512
    assert hub.slow_client_closes == 0 and conn.is_open
    ws.transport.abort()
