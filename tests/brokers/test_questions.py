"""Questions about the hub, asked on any node, answered for the whole cluster."""
from __future__ import annotations

from fastpush import ops
from tests.brokers.cluster import HUB, got, text


async def test_an_empty_cluster_knows_nothing(cluster):
    assert await cluster.agree(ops.ConnectionExists(HUB, "c1")) is False
    assert await cluster.agree(ops.GroupExists(HUB, "g")) is False
    assert await cluster.agree(ops.UserExists(HUB, "alice")) is False
    assert await cluster.agree(ops.HasPermission(HUB, "sendToGroup", "c1", "g")) is False
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == []


async def test_connections_users_and_groups_on_either_node_are_known_to_both(cluster):
    await cluster.connect(cluster.a, "c1", "alice", groups=["g"])
    await cluster.connect(cluster.b, "c2", "bob", groups=["h"])
    for cid in ("c1", "c2"):
        assert await cluster.agree(ops.ConnectionExists(HUB, cid)) is True
    for user in ("alice", "bob"):
        assert await cluster.agree(ops.UserExists(HUB, user)) is True
    assert await cluster.agree(ops.GroupMembers(HUB, "g")) == [("c1", "alice")]
    assert await cluster.agree(ops.GroupMembers(HUB, "h")) == [("c2", "bob")]
    assert await cluster.agree(ops.ConnectionExists(HUB, "c3")) is False
    assert await cluster.agree(ops.UserExists(HUB, "carol")) is False


async def test_hubs_are_named_case_insensitively_and_kept_apart(cluster):
    await cluster.connect(cluster.a, "c1", "alice", groups=["g"], hub="Chat")
    assert await cluster.agree(ops.ConnectionExists("CHAT", "c1")) is True
    assert await cluster.agree(ops.GroupMembers("chat", "g")) == [("c1", "alice")]
    assert await cluster.submit(cluster.b, ops.AddConnectionToGroup("cHaT", "c1", "h")) is True
    assert await cluster.agree(ops.GroupExists("Chat", "h")) is True
    assert await cluster.agree(ops.ConnectionExists("lobby", "c1")) is False
    assert await cluster.agree(ops.UserExists("lobby", "alice")) is False
    assert await cluster.agree(ops.GroupExists("lobby", "g")) is False


async def test_a_user_exists_while_any_of_its_connections_does(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "alice")
    c2 = await cluster.connect(cluster.b, "c2", "alice")
    await cluster.disconnect(cluster.a, c1)
    assert await cluster.agree(ops.UserExists(HUB, "alice")) is True
    await cluster.disconnect(cluster.b, c2)
    assert await cluster.agree(ops.UserExists(HUB, "alice")) is False


async def test_names_are_carried_as_they_are(cluster):
    user, groups = "ünï|cödé:user", ["a:b", "with space", "ĝrüpo", "*?[x]", "g|h"]
    conn = await cluster.connect(cluster.a, "c1", user, groups=groups)
    assert await cluster.agree(ops.UserExists(HUB, user)) is True
    for group in groups:
        assert await cluster.agree(ops.GroupMembers(HUB, group)) == [("c1", user)]
    assert await cluster.agree(ops.GroupExists(HUB, "a")) is False
    assert await cluster.agree(ops.GroupExists(HUB, "*")) is False
    await cluster.send(cluster.b, ops.SendToGroup(HUB, "*?[x]", text("pattern-like, literal")))
    await cluster.send(cluster.b, ops.SendToUser(HUB, user, text("to the user")))
    assert got(conn) == ["pattern-like, literal", "to the user"]
