"""Closing connections: the close reaches each connection it names, on whichever node, with its
reason (a default one if none is given), and no other."""
from __future__ import annotations

from fastpush import ops
from fastpush.hub import DEFAULT_CLOSE_REASON
from fastpush.protocol.close_codes import CloseCode
from tests.brokers.cluster import HUB

NORMAL = int(CloseCode.NORMAL)


async def test_a_connection_is_closed_from_another_node(cluster):
    c1 = await cluster.connect(cluster.a, "c1")
    c2 = await cluster.connect(cluster.a, "c2")
    assert await cluster.submit(cluster.b, ops.CloseConnection(HUB, "c1", "bye")) is None
    assert c1.closes == [(NORMAL, "bye", True)]
    assert c2.closes == []


async def test_a_close_without_a_reason_gives_the_default_one(cluster):
    conn = await cluster.connect(cluster.a, "c1")
    assert await cluster.submit(cluster.b, ops.CloseConnection(HUB, "c1")) is None
    assert conn.closes == [(NORMAL, DEFAULT_CLOSE_REASON, True)]


async def test_closing_a_missing_connection_does_nothing(cluster):
    conn = await cluster.connect(cluster.a, "c1")
    assert await cluster.submit(cluster.b, ops.CloseConnection(HUB, "nobody")) is None
    assert conn.closes == []


async def test_close_all_closes_the_hub_but_the_excluded(cluster):
    c1 = await cluster.connect(cluster.a, "c1")
    c2 = await cluster.connect(cluster.b, "c2")
    c3 = await cluster.connect(cluster.b, "c3")
    other_hub = await cluster.connect(cluster.b, "c4", hub="lobby")
    assert await cluster.submit(cluster.a, ops.CloseAll(HUB, ("c2",), "maintenance")) is None
    assert c1.closes == c3.closes == [(NORMAL, "maintenance", True)]
    assert c2.closes == other_hub.closes == []


async def test_close_group_closes_its_members_but_the_excluded(cluster):
    c1 = await cluster.connect(cluster.a, "c1", groups=["g"])
    c2 = await cluster.connect(cluster.b, "c2", groups=["g"])
    c3 = await cluster.connect(cluster.b, "c3", groups=["g"])
    outsider = await cluster.connect(cluster.a, "c4", groups=["h"])
    assert await cluster.submit(cluster.a, ops.CloseGroup(HUB, "g", ("c3",))) is None
    assert c1.closes == c2.closes == [(NORMAL, DEFAULT_CLOSE_REASON, True)]
    assert c3.closes == outsider.closes == []


async def test_close_user_closes_its_connections_on_every_node_but_the_excluded(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice")
    c2 = await cluster.connect(cluster.b, "c2", "alice")
    c3 = await cluster.connect(cluster.a, "c3", "alice")
    bob = await cluster.connect(cluster.b, "c4", "bob")
    assert await cluster.submit(cluster.b, ops.CloseUser(HUB, "alice", ("c3",), "signed out")) is None
    assert c1.closes == c2.closes == [(NORMAL, "signed out", True)]
    assert c3.closes == bob.closes == []


async def test_closing_groups_and_users_nobody_is_in_does_nothing(cluster):
    conn = await cluster.connect(cluster.a, "c1", "alice", groups=["g"])
    assert await cluster.submit(cluster.b, ops.CloseGroup(HUB, "empty")) is None
    assert await cluster.submit(cluster.b, ops.CloseUser(HUB, "nobody")) is None
    assert await cluster.submit(cluster.b, ops.CloseAll("lobby")) is None
    assert conn.closes == []
