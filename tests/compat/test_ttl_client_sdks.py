"""messageTtlSeconds as the official client SDKs see it, each SDK and version with its default
reliable protocol: a client cut off by a network outage (a proxy that drops its connection and
refuses its reconnects for a while) comes back by recovering its session, and is then sent what
it missed, except what expired before it came back; the sequenceIds it is given have no gap.
The sends go through the Python server SDK's pipeline (signed by it); its send_* methods have no
TTL parameter, so the request is built by hand and sent with its public `send_request`."""
from __future__ import annotations

import asyncio
import time

import pytest
from azure.core.rest import HttpRequest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.compat.drivers import Event
from tests.fault_proxy import FaultProxy
from tests.helpers import client_url, eventually

RECOVERY_SECONDS = 30.0  # the SDKs retry a recovery for 30 s; here it succeeds once the proxy is up


@pytest.fixture
async def proxy(server):
    proxy = await FaultProxy(server.port).start()
    yield proxy
    proxy.come_up()
    await proxy.stop()


def _send(server, hub: str, text: str, ttl: int | None) -> float:
    service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
    params = {"api-version": "2024-12-01"} | ({"messageTtlSeconds": ttl} if ttl is not None else {})
    response = service.send_request(HttpRequest("POST", f"/api/hubs/{hub}/:send", params=params, content=text,
                                                headers={"Content-Type": "text/plain"}))
    assert response.status_code == 202, response.text()
    return time.time() + (ttl or 0)


async def send(server, hub: str, text: str, ttl: int | None = None) -> float:
    """Send through the server SDK; the wall-clock time by which the message has expired."""
    return await asyncio.to_thread(_send, server, hub, text, ttl)


async def messages(client, count: int, timeout: float) -> tuple[list[tuple[int, str]], list[Event]]:
    """The next `count` server messages as (sequenceId, text), in sequence order (the Python SDK
    runs each callback on a thread of its own), and every other event seen meanwhile."""
    got, others = [], []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        event = await client.event(max(0.1, deadline - time.monotonic()))
        if event.kind == "server-message":
            got.append((event.message.sequence_id, event.message.data))
        else:
            others.append(event)
    return sorted(got), others


async def test_a_client_back_from_an_outage_never_gets_what_expired_during_it(server, proxy, hub_name, driver):
    client = await driver.client(client_url(server, hub_name).replace(f":{server.port}/", f":{proxy.port}/"),
                                 "reliable")
    try:
        connection_id, _ = await client.start()
        await send(server, hub_name, "one")
        assert (await messages(client, 1, 10))[0] == [(1, "one")]

        proxy.go_down()
        hub = server.server.node.hub(hub_name)
        assert await eventually(lambda: server.acall(lambda: hub.connection(connection_id).is_lost))
        expired = await send(server, hub_name, "stale", ttl=1)
        await send(server, hub_name, "two")
        await send(server, hub_name, "stale too", ttl=1)
        await asyncio.sleep(max(0.0, expired - time.time()) + 0.1)
        await send(server, hub_name, "three", ttl=300)
        proxy.come_up()

        got, others = await messages(client, 2, RECOVERY_SECONDS)
        assert got == [(2, "two"), (3, "three")]  # "one" may come again: the SDK drops what it has seen
        assert [event.kind for event in others] == []  # recovered: no disconnected, no new connected
        await send(server, hub_name, "four")
        assert (await messages(client, 1, 10))[0] == [(4, "four")]
    finally:
        await client.dispose()
