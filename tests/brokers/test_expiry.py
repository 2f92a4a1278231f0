"""A send's expiry crosses between nodes as the wall-clock time it carries: every node drops a send
that arrives after it, and gives one that has not expired a deadline on its own clock."""
from __future__ import annotations

import time

from fastpush import ops
from tests.brokers.cluster import HUB, got, text


async def test_an_expired_send_reaches_no_node_and_a_live_one_every_node(cluster):
    c1 = await cluster.connect(cluster.a, "c1", "ann", groups=["g"])
    c2 = await cluster.connect(cluster.b, "c2", "ann", groups=["g"])
    gone = time.time() - 1
    for op in (ops.SendToAll(HUB, text("all"), expires_at=gone), ops.SendToGroup(HUB, "g", text("g"), expires_at=gone),
               ops.SendToUser(HUB, "ann", text("ann"), expires_at=gone),
               ops.SendToConnection(HUB, "c2", text("c2"), expires_at=gone)):
        await cluster.send(cluster.a, op)
    assert got(c1) == got(c2) == []
    await cluster.send(cluster.b, ops.SendToGroup(HUB, "g", text("live"), expires_at=time.time() + 60))
    assert got(c1) == got(c2) == ["live"]
    for conn in (c1, c2):
        live = conn.replay[-2]  # the fence follows it
        assert 58 < live.deadline - time.monotonic() <= 60, conn
