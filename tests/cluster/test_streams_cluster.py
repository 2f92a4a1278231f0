"""A group stream whose publisher is on one node and whose members are on another, through Redis:
each fragment travels as one group send carrying its `stream`, so the far node frames it as the
near one would (JSON members: `stream` on every message and the end; raw members: the data alone)."""
from __future__ import annotations

import asyncio

import pytest

import fastpush
from tests.conftest import ACCESS_KEY, _run_in_thread, _stop
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, connect

SEND = ["webpubsub.sendToGroup"]


@pytest.fixture
async def two_nodes(redis_server):
    nodes = []
    try:
        for _ in range(2):
            nodes.append(await asyncio.to_thread(_run_in_thread, lambda: fastpush.Server(
                "127.0.0.1", 0, access_key=ACCESS_KEY, redis_url=redis_server.url)))
        yield nodes[0][0], nodes[1][0]
    finally:
        for running, thread, _ in nodes:
            await asyncio.to_thread(_stop, running, thread)


@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1], ids=["json", "reliable"])
async def test_a_stream_reaches_members_on_another_node(two_nodes, hub_name, subprotocol):
    a, b = two_nodes
    member = await connect(b, hub_name, subprotocol, groups=["room"])
    raw = await connect(b, hub_name, groups=["room"])
    publisher = await connect(a, hub_name, JSON_V1, user_id="ann", roles=SEND)

    await publisher.send({"type": "sendToGroup", "group": "room", "stream": {"streamId": "s1"}})
    assert await publisher.recv() == {"type": "streamAck", "streamId": "s1", "expectedSequenceId": 1}
    for seq, text in ((1, "to"), (2, "ken")):
        await publisher.send({"type": "streamData", "streamId": "s1", "streamSequenceId": seq,
                              "dataType": "text", "data": text})
    await publisher.send({"type": "streamEnd", "streamId": "s1", "error": {"message": "cut", "userErrorCode": "E"}})

    got = [await member.recv() for _ in range(3)]
    assert [(m["data"], m["fromUserId"], m["stream"]) for m in got] == [
        ("to", "ann", {"streamId": "s1", "streamSequenceId": 1, "endOfStream": False}),
        ("ken", "ann", {"streamId": "s1", "streamSequenceId": 2, "endOfStream": False}),
        ("", "ann", {"streamId": "s1", "streamSequenceId": 3, "endOfStream": True,
                     "error": {"name": "UserError", "message": "cut", "userErrorCode": "E"}})]
    if subprotocol == JSON_RELIABLE_V1:
        assert [m["sequenceId"] for m in got] == [1, 2, 3]
    assert [await raw.recv() for _ in range(2)] == ["to", "ken"]
    await raw.expect_silence()
