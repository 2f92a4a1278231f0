"""Connections joining and leaving groups: on whichever node the connection is, from whichever node
the operation comes, every node then answers the same."""
from __future__ import annotations

from fastpush import ops
from tests.brokers.cluster import HUB, got, text


async def test_a_connection_is_added_to_a_group_from_another_node(cluster):
    conn = await cluster.connect(cluster.a, "c1", "alice")
    assert await cluster.submit(cluster.b, ops.AddConnectionToGroup(HUB, "c1", "g")) is True
    assert conn.groups == {"g"}
    assert await cluster.agree(ops.GroupExists(HUB, "g")) is True
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == [("c1", "alice")]
    # Its node listens to the group before the add is confirmed: the next send reaches it.
    await cluster.send(cluster.b, ops.SendToGroup(HUB, "g", text("hi")))
    assert got(conn) == ["hi"]


async def test_adding_a_missing_connection_reports_false(cluster):
    await cluster.connect(cluster.a, "c1")
    assert await cluster.submit(cluster.b, ops.AddConnectionToGroup(HUB, "nobody", "g")) is False
    assert await cluster.submit(cluster.b, ops.AddConnectionToGroup("elsewhere", "c1", "g")) is False
    assert await cluster.agree(ops.GroupExists(HUB, "g")) is False


async def test_adding_twice_is_one_membership(cluster):
    await cluster.connect(cluster.a, "c1")
    for _ in range(2):
        assert await cluster.submit(cluster.b, ops.AddConnectionToGroup(HUB, "c1", "g")) is True
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == [("c1", None)]


async def test_a_group_lists_its_members_on_every_node_sorted_by_connection(cluster):
    await cluster.connect(cluster.a, "c2", groups=["g"])
    await cluster.connect(cluster.b, "c1", "alice", groups=["g", "h"])
    await cluster.connect(cluster.a, "c3", "bob", groups=["g"])
    await cluster.connect(cluster.b, "c4", "bob", groups=["h"])
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == [("c1", "alice"), ("c2", None), ("c3", "bob")]
    assert await cluster.agree(ops.GroupMembers(HUB, "h")) == [("c1", "alice"), ("c4", "bob")]
    assert await cluster.agree(ops.GroupMembers(HUB, "none")) == []


async def test_a_connection_is_removed_from_a_group(cluster):
    c1 = await cluster.connect(cluster.a, "c1", groups=["g"])
    c2 = await cluster.connect(cluster.b, "c2", groups=["g"])
    assert await cluster.submit(cluster.b, ops.RemoveConnectionFromGroup(HUB, "c1", "g")) is None
    assert c1.groups == set()
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == [("c2", None)]
    assert await cluster.submit(cluster.a, ops.RemoveConnectionFromGroup(HUB, "c2", "g")) is None
    assert await cluster.agree(ops.GroupExists(HUB, "g")) is False
    await cluster.send(cluster.a, ops.SendToGroup(HUB, "g", text("to nobody")))
    assert got(c1) == got(c2) == []


async def test_a_connection_is_removed_from_all_its_groups(cluster):
    c1 = await cluster.connect(cluster.a, "c1", groups=["g1", "g2"])
    await cluster.connect(cluster.b, "c2", groups=["g1"])
    assert await cluster.submit(cluster.b, ops.RemoveConnectionFromAllGroups(HUB, "c1")) is None
    assert c1.groups == set()
    assert await cluster.agree(ops.GroupMembers(HUB, "g1")) == [("c2", None)]
    assert await cluster.agree(ops.GroupExists(HUB, "g2")) is False


async def test_removing_a_missing_connection_changes_nothing(cluster):
    await cluster.connect(cluster.a, "c1", groups=["g"])
    assert await cluster.submit(cluster.b, ops.RemoveConnectionFromGroup(HUB, "nobody", "g")) is None
    assert await cluster.submit(cluster.b, ops.RemoveConnectionFromAllGroups(HUB, "nobody")) is None
    assert await cluster.submit(cluster.b, ops.RemoveConnectionFromGroup(HUB, "c1", "other")) is None
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == [("c1", None)]


async def test_connections_matching_a_filter_are_added_to_groups(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice")
    c2 = await cluster.connect(cluster.b, "c2", "bob")
    c3 = await cluster.connect(cluster.b, "c3", "alice")
    op = ops.AddConnectionsToGroups(HUB, ("g1", "g2"), "userId eq 'alice'")
    assert await cluster.submit(cluster.a, op) is None
    assert c1.groups == c3.groups == {"g1", "g2"} and c2.groups == set()
    for group in ("g1", "g2"):
        assert await cluster.agree(ops.GroupMembers(HUB, group)) == [("c1", "alice"), ("c3", "alice")]
    assert await cluster.submit(cluster.b, ops.AddConnectionsToGroups(HUB, ("all",))) is None  # no filter
    assert await cluster.agree(ops.GroupMembers(HUB, "all")) == [("c1", "alice"), ("c2", "bob"), ("c3", "alice")]


async def test_connections_matching_a_filter_are_removed_from_groups(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice", groups=["g1", "g2"])
    c2 = await cluster.connect(cluster.b, "c2", "bob", groups=["g1", "g2"])
    op = ops.RemoveConnectionsFromGroups(HUB, ("g1",), "userId eq 'alice'")
    assert await cluster.submit(cluster.b, op) is None
    assert c1.groups == {"g2"} and c2.groups == {"g1", "g2"}
    assert await cluster.agree(ops.GroupMembers(HUB, "g1")) == [("c2", "bob")]
    assert await cluster.submit(cluster.a, ops.RemoveConnectionsFromGroups(HUB, ("g2",))) is None
    assert await cluster.agree(ops.GroupExists(HUB, "g2")) is False


async def test_a_connection_that_leaves_leaves_its_groups(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice", groups=["g"])
    c2 = await cluster.connect(cluster.b, "c2", groups=["g"])
    await cluster.disconnect(cluster.a, c1)
    assert await cluster.agree(ops.UserExists(HUB, "alice")) is False
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == [("c2", None)]
    await cluster.disconnect(cluster.b, c2)
    assert await cluster.agree(ops.GroupExists(HUB, "g")) is False
