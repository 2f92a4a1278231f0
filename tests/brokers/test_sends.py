"""Sends reach the connections they name, on every node, and no others, framed with where they
came from; one node's sends arrive in the order it made them."""
from __future__ import annotations

from fastpush import ops
from fastpush.protocol.json_protocol import GroupSource, ServerSource
from tests.brokers.cluster import HUB, got, text


async def test_send_to_all_reaches_every_connection_of_the_hub(cluster):
    c1 = await cluster.connect(cluster.a, "c1")
    c2 = await cluster.connect(cluster.b, "c2", "bob", groups=["g"])
    other_hub = await cluster.connect(cluster.b, "c3", hub="lobby")
    await cluster.send(cluster.b, ops.SendToAll(HUB, text("hi")))
    assert c1.received[0] == c2.received[0] == ("hi", ServerSource())
    assert got(other_hub) == []


async def test_send_to_all_skips_the_excluded_and_those_the_filter_refuses(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice")
    c2 = await cluster.connect(cluster.b, "c2", "bob")
    c3 = await cluster.connect(cluster.b, "c3", "alice")
    await cluster.send(cluster.a, ops.SendToAll(HUB, text("not c3"), excluded=("c3",)))
    await cluster.send(cluster.a, ops.SendToAll(HUB, text("alice"), filter="userId eq 'alice'"))
    assert got(c1) == ["not c3", "alice"]
    assert got(c2) == ["not c3"]
    assert got(c3) == ["alice"]


async def test_send_to_group_reaches_its_members_only(cluster):
    c1 = await cluster.connect(cluster.a, "c1", groups=["g"])
    c2 = await cluster.connect(cluster.b, "c2", groups=["g", "h"])
    outsider = await cluster.connect(cluster.a, "c3", groups=["h"])
    await cluster.send(cluster.a, ops.SendToGroup(HUB, "g", text("to g")))
    assert c1.received[:1] == c2.received[:1] == [("to g", GroupSource("g"))]
    assert got(c1) == got(c2) == ["to g"]
    assert got(outsider) == []


async def test_send_to_group_skips_the_excluded_and_the_filtered_and_names_its_sender(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice", groups=["g"])
    c2 = await cluster.connect(cluster.b, "c2", "bob", groups=["g"])
    await cluster.send(cluster.b, ops.SendToGroup(HUB, "g", text("not c1"), excluded=("c1",)))
    await cluster.send(cluster.b, ops.SendToGroup(HUB, "g", text("bob"), filter="userId eq 'bob'"))
    await cluster.send(cluster.b, ops.SendToGroup(HUB, "g", text("from alice"), from_user_id="alice"))
    assert got(c1) == ["from alice"]
    assert got(c2) == ["not c1", "bob", "from alice"]
    assert c2.received[-2] == ("from alice", GroupSource("g", "alice"))


async def test_send_to_user_reaches_its_connections_on_every_node(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice")
    c2 = await cluster.connect(cluster.b, "c2", "alice")
    bob = await cluster.connect(cluster.a, "c3", "bob")
    await cluster.send(cluster.b, ops.SendToUser(HUB, "alice", text("hi alice")))
    await cluster.send(cluster.b, ops.SendToUser(HUB, "alice", text("c2 only"), filter="connectionId eq 'c2'"))
    assert c1.received[:1] == [("hi alice", ServerSource())]
    assert got(c1) == ["hi alice"]
    assert got(c2) == ["hi alice", "c2 only"]
    assert got(bob) == []


async def test_send_to_connection_reaches_that_connection_only(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice")
    c2 = await cluster.connect(cluster.b, "c2", "alice")
    await cluster.send(cluster.a, ops.SendToConnection(HUB, "c2", text("just you")))
    assert c2.received[:1] == [("just you", ServerSource())]
    assert got(c1) == []


async def test_sends_to_nobody_succeed_and_reach_nobody(cluster):
    conn = await cluster.connect(cluster.a, "c1", "alice", groups=["g"])
    await cluster.send(cluster.b, ops.SendToGroup(HUB, "empty", text("x")))
    await cluster.send(cluster.b, ops.SendToUser(HUB, "nobody", text("x")))
    await cluster.send(cluster.b, ops.SendToConnection(HUB, "nobody", text("x")))
    await cluster.send(cluster.b, ops.SendToAll("lobby", text("x")))
    assert got(conn) == []


async def test_one_node_s_sends_arrive_in_the_order_it_made_them(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice", groups=["g"])
    c2 = await cluster.connect(cluster.b, "c2", "bob", groups=["g"])
    sends = [ops.SendToGroup(HUB, "g", text("0")), ops.SendToUser(HUB, "alice", text("1")),
             ops.SendToAll(HUB, text("2")), ops.SendToConnection(HUB, "c2", text("3"))] * 5
    for op in sends:
        assert await cluster.submit(cluster.b, op) is None
    await cluster.send(cluster.b, ops.SendToAll(HUB, text("end")))
    assert got(c1) == ["0", "1", "2"] * 5 + ["end"]
    assert got(c2) == ["0", "2", "3"] * 5 + ["end"]
