"""Granting and revoking a connection's permissions from any node; every node then answers
HasPermission the same."""
from __future__ import annotations

from fastpush import ops
from fastpush.permissions import Permission
from tests.brokers.cluster import HUB

SEND, JOIN = Permission.SEND_TO_GROUP, Permission.JOIN_LEAVE_GROUP


def may(permission: str, connection_id: str, group: str | None = None) -> ops.HasPermission:
    return ops.HasPermission(HUB, permission, connection_id, group)


async def test_a_permission_for_one_group_is_granted_from_another_node(cluster):
    conn = await cluster.connect(cluster.a, "c1")
    assert await cluster.agree(may(SEND, "c1", "g")) is False
    assert await cluster.submit(cluster.b, ops.GrantPermission(HUB, "c1", SEND, "g")) is True
    assert conn.roles == {"webpubsub.sendToGroup.g"}
    assert await cluster.agree(may(SEND, "c1", "g")) is True
    assert await cluster.agree(may(SEND, "c1", "h")) is False
    assert await cluster.agree(may(SEND, "c1")) is False  # not for every group
    assert await cluster.agree(may(JOIN, "c1", "g")) is False


async def test_a_permission_for_every_group_is_granted(cluster):
    await cluster.connect(cluster.a, "c1")
    assert await cluster.submit(cluster.b, ops.GrantPermission(HUB, "c1", JOIN)) is True
    assert await cluster.agree(may(JOIN, "c1", "any")) is True
    assert await cluster.agree(may(JOIN, "c1")) is True
    assert await cluster.agree(may(SEND, "c1", "any")) is False


async def test_granting_to_a_missing_connection_reports_false(cluster):
    await cluster.connect(cluster.a, "c1")
    assert await cluster.submit(cluster.b, ops.GrantPermission(HUB, "nobody", SEND, "g")) is False
    assert await cluster.agree(may(SEND, "nobody", "g")) is False


async def test_the_token_s_roles_are_known_to_every_node(cluster):
    await cluster.connect(cluster.a, "c1", roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroups.news.*"])
    assert await cluster.agree(may(JOIN, "c1", "g")) is True
    assert await cluster.agree(may(SEND, "c1", "news.eu")) is True
    assert await cluster.agree(may(SEND, "c1", "news.eu.sport")) is False


async def test_revoking_one_group_keeps_the_others(cluster):
    conn = await cluster.connect(cluster.a, "c1")
    for group in ("g", "h"):
        assert await cluster.submit(cluster.b, ops.GrantPermission(HUB, "c1", SEND, group)) is True
    assert await cluster.submit(cluster.b, ops.RevokePermission(HUB, "c1", SEND, "g")) is None
    assert conn.roles == {"webpubsub.sendToGroup.h"}
    assert await cluster.agree(may(SEND, "c1", "g")) is False
    assert await cluster.agree(may(SEND, "c1", "h")) is True


async def test_revoking_without_a_group_takes_every_group_s_grant_but_wildcard_roles(cluster):
    roles = ["webpubsub.sendToGroup.g", "webpubsub.sendToGroups.news.*", "webpubsub.joinLeaveGroup"]
    await cluster.connect(cluster.a, "c1", roles=roles)
    assert await cluster.submit(cluster.a, ops.GrantPermission(HUB, "c1", SEND)) is True
    assert await cluster.submit(cluster.b, ops.RevokePermission(HUB, "c1", SEND)) is None
    assert await cluster.agree(may(SEND, "c1", "g")) is False
    assert await cluster.agree(may(SEND, "c1", "other")) is False
    assert await cluster.agree(may(SEND, "c1", "news.eu")) is True  # granted by the token's pattern
    assert await cluster.agree(may(JOIN, "c1", "g")) is True


async def test_revoking_from_a_missing_connection_does_nothing(cluster):
    assert await cluster.submit(cluster.b, ops.RevokePermission(HUB, "nobody", SEND, "g")) is None
