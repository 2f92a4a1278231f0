"""The last-value cache on each broker: a send on one node is served to a connection joining on
the other (the cache in the process, or in Redis), numbered there; both nodes answer the REST
question alike; a hub without lastValueGroups caches nothing."""
from __future__ import annotations

import uuid

import pytest

from fastpush import ops
from fastpush.broker.memory import MemoryBroker
from fastpush.broker.redis import RedisBroker
from fastpush.hub import Hub
from fastpush.lastvalue import LastValuePolicy, LastValues
from fastpush.node import Node
from tests.brokers.cluster import HUB, Cluster, got, text
from tests.helpers import eventually

POLICY = LastValuePolicy(["prices.*"], depth=2)


@pytest.fixture
async def cached(broker_kind):
    """Two nodes whose hub HUB caches `prices.*` (one node, twice, for the memory broker)."""
    kind, url = broker_kind
    policies = {HUB: POLICY}
    if url is None:
        broker = MemoryBroker()
        node = Node(broker, configure=lambda hub: _configure(hub, None))
        nodes = [node, node]
    else:
        prefix = "lastvalue-" + uuid.uuid4().hex[:12]
        brokers = [RedisBroker(url, prefix=prefix, last_value_policy=lambda hub: policies.get(hub.lower()))
                   for _ in range(2)]
        nodes = [Node(b, configure=lambda hub, b=b: _configure(hub, b)) for b in brokers]
    for node in dict.fromkeys(nodes):
        await node.start()
    try:
        yield Cluster(kind, nodes[0], nodes[1])
    finally:
        for node in dict.fromkeys(nodes):
            await node.stop()


def _configure(hub: Hub, broker: RedisBroker | None) -> None:
    if hub.name.lower() == HUB:
        hub.last_values = LastValues(POLICY, broker.last_values if broker is not None else None)


async def test_a_hub_without_the_setting_caches_nothing(cluster):
    await cluster.send(cluster.a, ops.SendToGroup("other", "prices.a", text("x")))
    assert await cluster.agree(ops.LastValue("other", "prices.a")) is None


async def test_a_send_on_one_node_is_served_on_the_other(cached):
    for value in ("1", "2", "3"):
        assert await cached.submit(cached.a, ops.SendToGroup(HUB, "prices.a", text(value))) is None

    async def stored() -> bool:
        return [e.payload.data for e in await cached.agree(ops.LastValue(HUB, "prices.a"))] == [b"2", b"3"]
    assert await eventually(stored, 5)
    assert await cached.agree(ops.LastValue(HUB, "chat")) is None
    conn = await cached.connect(cached.b, "c1", groups=["prices.a"])
    cached.b.hub(HUB).serve_last_values(conn)  # what the session does after `connected`
    assert await eventually(lambda: got(conn) == ["2", "3"], 5)
    await cached.send(cached.a, ops.SendToGroup(HUB, "prices.a", text("4")))
    assert got(conn) == ["2", "3", "4"]
