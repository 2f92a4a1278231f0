"""What the official client SDKs do when their node loses Redis for longer than
--broker-loss-timeout: the node closes them with 1012 and ends their sessions, the SDK tries to
recover, is refused, and starts a new connection (a new connection id: it knows it may have
missed messages), which gets what is sent once Redis is back. Redis goes silent through a proxy
holding every byte, as a cut link would (tests/cluster/test_partition.py cuts a real one)."""
from __future__ import annotations

import asyncio
import time

import pytest

import fastpush
from tests.cluster.test_cluster import arest
from tests.conftest import ACCESS_KEY, _run_in_thread, _stop
from tests.fault_proxy import FaultProxy
from tests.helpers import ServerView, client_url, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
EVENTS_SECONDS = 60.0  # for the SDK to be closed, refused and connected anew


@pytest.fixture
async def cut_node(redis_server):
    """A node reaching Redis through a proxy (run on the test's loop, the node in its own thread)."""
    proxy = await FaultProxy(redis_server.port).start()
    running, thread, _ = await asyncio.to_thread(_run_in_thread, lambda: fastpush.Server(
        "127.0.0.1", 0, access_key=ACCESS_KEY, redis_url=f"redis://127.0.0.1:{proxy.port}",
        broker_loss_timeout_seconds=1.0))
    try:
        yield running, proxy
    finally:
        proxy.release()
        await asyncio.to_thread(_stop, running, thread)
        await proxy.stop()


async def test_an_sdk_client_of_a_node_without_redis_starts_over_and_is_told(cut_node, hub_name, driver):
    running, proxy = cut_node
    view = ServerView(running.endpoint, ACCESS_KEY)
    send = f"/api/hubs/{hub_name}/:send"
    client = await driver.client(client_url(running, hub_name), "reliable")
    try:
        first, _ = await client.start()
        assert (await arest(view, "POST", send, b"before"))[0] == 202
        assert (await client.message()).data == "before"

        proxy.hold()  # Redis goes silent; the node notices, then closes its clients
        node = running.server.node
        assert await eventually(lambda: running.acall(lambda: node.connection_count == 0), 30), \
            "the node kept its client"
        proxy.release()  # Redis is back: the SDK's attempts to recover now meet a healthy node
        assert await eventually(lambda: running.acall(lambda: node.broker.health()["healthy"]), 30)

        events = []
        deadline = time.monotonic() + EVENTS_SECONDS
        while not (events and events[-1].kind == "connected"):
            events.append(await client.event(max(0.1, deadline - time.monotonic())))
        kinds = [event.kind for event in events]
        assert kinds == ["disconnected", "connected"], events  # told, then a fresh start
        assert events[-1].connection_id != first, "the session came back as if nothing was missed"
        assert (await arest(view, "POST", send, b"after"))[0] == 202
        assert (await client.message()).data == "after"
    finally:
        await client.dispose()
