"""After losing Redis, nodes come back one by one (a failover, a restart, a network blip). A node
back first takes no operation until the nodes it knew are subscribed again: a send it accepted
before would reach only the nodes already back, and the others' clients would miss it without
anyone knowing. A node that does not come back within the node TTL is given up on.

Each node reaches the session's Redis through its own FaultProxy, so the test decides who is back
when. Redis keeps its data (as a promoted replica does) or loses it (a restart without persistence:
the nodes' own keys deleted); then the node back first knows the others from its own keep-alive.
"""
from __future__ import annotations

import asyncio
import uuid

import pytest

from fastpush import ops
from fastpush.broker.errors import BrokerUnavailable
from fastpush.broker.redis import RedisBroker
from fastpush.node import Node
from fastpush.outcome import resolve
from fastpush.protocol.payload import DataType, Payload
from tests.doubles import FakeConnection
from tests.fault_proxy import FaultProxy
from tests.helpers import eventually
from tests.sentinel_cluster import command

pytestmark = pytest.mark.timeout(60)

HUB = "chat"
NODE_TTL = 1.5  # seconds; short, so giving up on a node that stays away is quick to see


def send(node: Node, text: str) -> asyncio.Future:
    return resolve(node.submit(ops.SendToAll(HUB, Payload(DataType.TEXT, text.encode()))))


@pytest.fixture
async def two_nodes(redis_server):
    """Nodes `a` and `b` behind their own proxies, `b` holding a client; (a, b, proxy_a, proxy_b, client,
    their key prefix)."""
    prefix = "reconnect-" + uuid.uuid4().hex[:12]
    proxies = [await FaultProxy(redis_server.port).start() for _ in range(2)]
    nodes = [Node(RedisBroker(f"redis://127.0.0.1:{p.port}", prefix=prefix, node_ttl=NODE_TTL)) for p in proxies]
    started = []
    try:
        for node in nodes:
            await node.start()
            started.append(node)
        client = FakeConnection("on-b", hub=HUB)
        await resolve(nodes[1].broker.prepare_connection(HUB, None, ()))
        nodes[1].hub(HUB).add_connection(client, ())
        await send(nodes[0], "before")
        assert await eventually(lambda: client.texts == ["before"], 5)
        yield nodes[0], nodes[1], proxies[0], proxies[1], client, prefix
    finally:
        for proxy in proxies:
            proxy.refusing = False
        for node in started:
            await node.stop()
        for proxy in proxies:
            await proxy.stop()


def waiting_for_peers(node: Node) -> bool:
    health = node.broker.health()
    return not health["healthy"] and "waiting for 1 other node" in (health.get("error") or "")


@pytest.mark.parametrize("redis_keeps_data", [True, False])
async def test_a_node_back_first_refuses_sends_until_the_others_are_back(two_nodes, redis_server, redis_keeps_data):
    a, b, proxy_a, proxy_b, client, prefix = two_nodes
    if not redis_keeps_data:  # then only a's memory names b: wait until its keep-alive has seen b
        assert await eventually(lambda: b.broker.node_id in a.broker._registry.peers, 10)
    proxy_a.refusing = proxy_b.refusing = True
    proxy_a.cut()
    proxy_b.cut()
    if not redis_keeps_data:
        keys = command(redis_server.port, "KEYS", f"{prefix}:*")
        assert keys and command(redis_server.port, "DEL", *keys) == len(keys)
    proxy_a.refusing = False  # a is back first; b stays away
    assert await eventually(lambda: waiting_for_peers(a), 10), a.broker.health()
    with pytest.raises(BrokerUnavailable):  # refused, not accepted and lost on b's client
        await send(a, "while b is away")

    proxy_b.refusing = False
    assert await eventually(lambda: a.broker.health()["healthy"] and b.broker.health()["healthy"], 15)
    await send(a, "after")
    assert await eventually(lambda: client.texts == ["before", "after"], 5), client.texts


async def test_a_node_that_stays_away_is_given_up_on_after_the_node_ttl(two_nodes):
    a, b, proxy_a, proxy_b, client, _ = two_nodes
    proxy_b.refusing = True
    proxy_a.cut()
    proxy_b.cut()
    assert await eventually(lambda: waiting_for_peers(a), 10), a.broker.health()
    assert await eventually(lambda: a.broker.health()["healthy"], NODE_TTL + 10), a.broker.health()
    await send(a, "b is given up on")
    assert not b.broker.health()["healthy"] and client.texts == ["before"]
