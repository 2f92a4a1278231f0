"""The `cluster` fixture: every test in this folder runs once on each broker (see cluster.py)."""
from __future__ import annotations

import uuid

import pytest

from fastpush.broker.memory import MemoryBroker
from fastpush.broker.redis import RedisBroker
from fastpush.node import Node
from tests.brokers.cluster import Cluster


@pytest.fixture(params=["memory", "redis"])
def broker_kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The broker's name, and for Redis the URL of the session's redis-server."""
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_server").url
    return "memory", None


@pytest.fixture
async def cluster(broker_kind: tuple[str, str | None]):
    kind, url = broker_kind
    if url is None:
        node = Node(MemoryBroker())
        nodes = [node, node]
    else:
        prefix = "conformance-" + uuid.uuid4().hex[:12]  # this test's own keys and channels
        nodes = [Node(RedisBroker(url, prefix=prefix)) for _ in range(2)]
    started = []
    try:
        for node in dict.fromkeys(nodes):
            await node.start()
            started.append(node)
        yield Cluster(kind, nodes[0], nodes[1])
    finally:
        for node in started:
            await node.stop()
