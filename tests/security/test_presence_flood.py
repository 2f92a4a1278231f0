"""A client that joins and leaves groups as fast as it can send cannot flood the upstream with
group presence events: one event per connection is in flight, what follows waits at most once
per group, a join and a leave that both wait cancel out, and at most MAX_PENDING_CHANGES groups
wait per connection (the rest are dropped, and said so)."""
from __future__ import annotations

import json
import logging
import threading

import pytest

import fastpush
from fastpush.config import Config, EventHandlerSettings, GroupPresenceEventFilters, HubSettings
from fastpush.events.presence import MAX_PENDING_CHANGES
from tests.events.upstream_server import Answer, Upstream
from tests.helpers import JSON_V1, ServerView, connect, eventually

KEY = "presence-flood-access-key-0123456789abcdefgh"


@pytest.fixture
def upstream():
    up = Upstream([KEY])
    yield up
    up.close()


@pytest.fixture
async def server(upstream):
    handler = EventHandlerSettings(upstream.url_template(),
                                   group_presence_events=GroupPresenceEventFilters(["joined", "left"]))
    config = Config(hubs={"flood": HubSettings(event_handlers=[handler])})
    async with fastpush.Server(port=0, access_key=KEY, config=config) as srv:
        yield srv


def presence(upstream: Upstream) -> list[tuple[str, str]]:
    return [(r.headers["ce-eventname"], json.loads(r.body)["group"]) for r in upstream.requests
            if r.method == "POST" and r.headers.get("ce-type", "").startswith("azure.webpubsub.gp.")]


async def test_flapping_reaches_the_upstream_as_its_net_changes(server, upstream):
    gate = threading.Event()
    upstream.answers["joined"] = Answer(204, gate=gate)  # the first event stays in flight
    client = await connect(ServerView.of(server), "flood", JSON_V1, roles=["webpubsub.joinLeaveGroup"])
    try:
        assert (await client.request({"type": "joinGroup", "group": "room"}))["success"]
        assert await eventually(lambda: presence(upstream) == [("joined", "room")])
        for _ in range(500):
            await client.send({"type": "leaveGroup", "group": "room"})
            await client.send({"type": "joinGroup", "group": "room"})
        assert (await client.request({"type": "leaveGroup", "group": "room"}))["success"]  # all handled
    finally:
        gate.set()
    assert (await client.request({"type": "joinGroup", "group": "marker"}))["success"]
    assert await eventually(lambda: ("joined", "marker") in presence(upstream))
    # 1,001 membership changes while the first was in flight: one left (the net change) was sent.
    assert presence(upstream) == [("joined", "room"), ("left", "room"), ("joined", "marker")]
    await client.close()


async def test_at_most_so_many_groups_wait_per_connection(server, upstream, caplog):
    gate = threading.Event()
    upstream.answers["joined"] = Answer(204, gate=gate)
    client = await connect(ServerView.of(server), "flood", JSON_V1)
    hub = server.hub("flood")
    extra = 25
    try:
        assert await hub.add_connection_to_group("g0", client.connection_id)
        assert await eventually(lambda: len(presence(upstream)) == 1)  # in flight, held by the gate
        for i in range(1, MAX_PENDING_CHANGES + 1 + extra):  # these wait
            assert await hub.add_connection_to_group(f"g{i}", client.connection_id)
    finally:
        gate.set()
    assert await eventually(lambda: len(presence(upstream)) == MAX_PENDING_CHANGES + 1, seconds=30)
    await hub.remove_connection_from_group("g0", client.connection_id)  # the next event: none else waits
    assert await eventually(lambda: len(presence(upstream)) == MAX_PENDING_CHANGES + 2)
    assert presence(upstream) == [("joined", f"g{i}") for i in range(MAX_PENDING_CHANGES + 1)] + [("left", "g0")]
    dropped = [r for r in caplog.records if "presence events waited" in r.getMessage()]
    assert dropped and all(r.levelno == logging.WARNING for r in dropped)  # the newest 25 joins were dropped
    await client.close()
