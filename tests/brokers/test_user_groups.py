"""A user added to a group: its connections join now, wherever they are, and so do the connections
it makes later, on any node, until it is removed."""
from __future__ import annotations

from fastpush import ops
from tests.brokers.cluster import HUB


async def test_every_connection_of_the_user_joins(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice")
    c2 = await cluster.connect(cluster.b, "c2", "alice")
    c3 = await cluster.connect(cluster.a, "c3", "bob")
    assert await cluster.submit(cluster.b, ops.AddUserToGroup(HUB, "alice", "g")) is None
    assert c1.groups == c2.groups == {"g"} and c3.groups == set()
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == [("c1", "alice"), ("c2", "alice")]


async def test_connections_the_user_makes_later_join_on_any_node(cluster):
    assert await cluster.submit(cluster.a, ops.AddUserToGroup(HUB, "alice", "g")) is None
    assert await cluster.agree(ops.GroupExists(HUB, "g")) is False  # a record, not a member
    c1 = await cluster.connect(cluster.b, "c1", "alice")
    c2 = await cluster.connect(cluster.a, "c2", "alice", groups=["token"])
    c3 = await cluster.connect(cluster.b, "c3", "bob")
    assert c1.groups == {"g"} and c2.groups == {"g", "token"} and c3.groups == set()
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == [("c1", "alice"), ("c2", "alice")]


async def test_a_user_removed_from_a_group_leaves_it_now_and_later(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice")
    for group in ("g", "h"):
        assert await cluster.submit(cluster.b, ops.AddUserToGroup(HUB, "alice", group)) is None
    assert await cluster.submit(cluster.b, ops.RemoveUserFromGroup(HUB, "alice", "g")) is None
    assert c1.groups == {"h"}
    assert await cluster.agree(ops.GroupExists(HUB, "g")) is False
    c2 = await cluster.connect(cluster.b, "c2", "alice")
    assert c2.groups == {"h"}


async def test_a_user_removed_from_all_groups_leaves_them_all_now_and_later(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice", groups=["token"])
    c2 = await cluster.connect(cluster.b, "c2", "bob", groups=["token"])
    for group in ("g", "h"):
        assert await cluster.submit(cluster.a, ops.AddUserToGroup(HUB, "alice", group)) is None
    assert await cluster.submit(cluster.b, ops.RemoveUserFromAllGroups(HUB, "alice")) is None
    assert c1.groups == set()  # its token's groups too
    assert c2.groups == {"token"}
    for group in ("g", "h"):
        assert await cluster.agree(ops.GroupExists(HUB, group)) is False
    c3 = await cluster.connect(cluster.b, "c3", "alice")
    assert c3.groups == set()


async def test_a_user_s_groups_belong_to_its_hub(cluster):
    assert await cluster.submit(cluster.a, ops.AddUserToGroup("lobby", "alice", "g")) is None
    conn = await cluster.connect(cluster.b, "c1", "alice")
    assert conn.groups == set()
    elsewhere = await cluster.connect(cluster.b, "c2", "alice", hub="LOBBY")  # hubs are named case-insensitively
    assert elsewhere.groups == {"g"}
