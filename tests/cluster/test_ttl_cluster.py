"""A message with a TTL reaches a node late through Redis: that node's subscriber socket goes
through a proxy that holds every byte (the link is slow, nothing closes) until the message has
expired. The node drops it on arrival; what has not expired still arrives, in order."""
from __future__ import annotations

import asyncio
import time

import pytest

import fastpush
from tests.cluster.test_cluster import arest
from tests.conftest import ACCESS_KEY, _run_in_thread, _stop
from tests.fault_proxy import FaultProxy
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, connect


@pytest.fixture
async def two_nodes(redis_server):
    """Node a on Redis directly, node b through the proxy (started off this loop: the proxy runs on it)."""
    proxy = await FaultProxy(redis_server.port).start()
    nodes = []
    try:
        for url in (redis_server.url, f"redis://127.0.0.1:{proxy.port}"):
            nodes.append(await asyncio.to_thread(_run_in_thread, lambda url=url: fastpush.Server(
                "127.0.0.1", 0, access_key=ACCESS_KEY, redis_url=url)))
        yield nodes[0][0], nodes[1][0], proxy
    finally:
        proxy.release()
        for running, thread, _ in nodes:
            await asyncio.to_thread(_stop, running, thread)
        await proxy.stop()


async def send(node, hub: str, text: str, ttl: int | None = None) -> float:
    """A REST send to the group through `node`; the wall-clock time by which it has expired."""
    target = f"/api/hubs/{hub}/groups/ticker/:send?api-version=2024-12-01"
    if ttl is not None:
        target += f"&messageTtlSeconds={ttl}"
    status, _ = await arest(ServerView(node.endpoint, ACCESS_KEY), "POST", target, text.encode())
    assert status == 202
    return time.time() + (ttl or 0)


@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1], ids=["json", "reliable"])
async def test_a_node_that_receives_a_message_after_its_ttl_drops_it(two_nodes, hub_name, subprotocol):
    a, b, proxy = two_nodes
    near = await connect(a, hub_name, subprotocol, groups=["ticker"])
    far = await connect(b, hub_name, subprotocol, groups=["ticker"])

    proxy.hold()  # node b's link to Redis stalls
    expired = await send(a, hub_name, "stale", ttl=1)
    await send(a, hub_name, "kept")
    await send(a, hub_name, "fresh", ttl=300)
    assert [(await near.recv())["data"] for _ in range(3)] == ["stale", "kept", "fresh"]  # in time on node a
    await asyncio.sleep(max(0.0, expired - time.time()) + 0.1)
    proxy.release()  # node b gets all three now, one of them expired

    await send(a, hub_name, "after")
    got = [await far.recv() for _ in range(3)]
    assert [m["data"] for m in got] == ["kept", "fresh", "after"]
    if subprotocol == JSON_RELIABLE_V1:
        assert [m["sequenceId"] for m in got] == [1, 2, 3]
    await far.expect_silence()
