"""Group presence events (hub setting `groupPresenceEvents`) caused by the official SDKs: a client
SDK's joinGroup and leaveGroup, the Python server SDK's REST adds and removes, and the client's
stop, reach a real upstream (tests/events/upstream_server.py) as `azure.webpubsub.gp.joined` and
`.left`, in order, for the groups the handler's filter matches and no others."""
from __future__ import annotations

import asyncio
import json

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from fastpush import Server
from fastpush.config import Config, EventHandlerSettings, GroupPresenceEventFilters, HubSettings
from tests.compat.drivers import ClientDriver
from tests.conftest import ACCESS_KEY, _run_in_thread, _stop
from tests.events.upstream_server import Upstream
from tests.helpers import client_url, eventually

HUB = "presence"
ROLES = ["webpubsub.joinLeaveGroup"]


@pytest.fixture(scope="module")
def upstream():
    up = Upstream([ACCESS_KEY])
    yield up
    up.close()


@pytest.fixture(scope="module")
def presence_server(upstream):
    handler = EventHandlerSettings(upstream.url_template(), system_events=["disconnected"],
                                   group_presence_events=GroupPresenceEventFilters(["joined", "left"], ["room.*"]))
    config = Config(hubs={HUB: HubSettings(event_handlers=[handler])})
    running, thread, _ = _run_in_thread(lambda: Server("127.0.0.1", 0, access_key=ACCESS_KEY, config=config))
    yield running
    _stop(running, thread)


def presence_of(upstream: Upstream, connection_id: str) -> list[tuple[str, str]]:
    """The presence events the upstream got for one connection, in order: (name, group)."""
    return [(r.headers["ce-eventname"], json.loads(r.body)["group"]) for r in upstream.requests
            if r.method == "POST" and r.headers.get("ce-connectionid") == connection_id
            and r.headers.get("ce-type", "").startswith("azure.webpubsub.gp.")]


async def test_joins_and_leaves_reach_the_upstream(driver: ClientDriver, presence_server, upstream):
    service = WebPubSubServiceClient.from_connection_string(presence_server.connection_string, hub=HUB)
    # json.webpubsub.azure.v1: its session ends with its socket (a reliable one may wait for its
    # client's return, 30 s, when an SDK's stop drops the socket without a close frame).
    client = await driver.client(client_url(presence_server, HUB, user_id="alice", roles=ROLES), "json")
    try:
        connection_id, _ = await client.start()
        await client.join_group("room.a")
        await client.join_group("lobby")  # the filter (room.*) does not match: not sent
        await client.join_group("room.b")
        await client.leave_group("room.a")
        await asyncio.to_thread(service.add_connection_to_group, "room.rest", connection_id)
        # Sent before the leave: had it still waited behind the event in flight, the two would cancel out.
        assert await eventually(lambda: ("joined", "room.rest") in presence_of(upstream, connection_id))
        await asyncio.to_thread(service.remove_connection_from_group, "room.rest", connection_id)
        await client.stop()  # the connection ends in lobby and room.b: it leaves them
        expected = [("joined", "room.a"), ("joined", "room.b"), ("left", "room.a"), ("joined", "room.rest"),
                    ("left", "room.rest"), ("left", "room.b")]
        assert await eventually(lambda: len(presence_of(upstream, connection_id)) >= len(expected))
        assert presence_of(upstream, connection_id) == expected
        assert await eventually(lambda: any(r.headers.get("ce-connectionid") == connection_id
                                            for r in upstream.events("disconnected")))
    finally:
        await client.dispose()

    joined = next(r for r in upstream.events("joined") if r.headers["ce-connectionid"] == connection_id)
    headers = joined.headers
    assert headers["ce-type"] == "azure.webpubsub.gp.joined" and headers["ce-hub"] == HUB
    assert headers["ce-userid"] == "alice" and headers["ce-source"] == f"/hubs/{HUB}/client/{connection_id}"
    assert headers["ce-specversion"] == headers["ce-awpsversion"] == "1.0"
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert joined.path == f"/upstream/{HUB}/joined"
    assert connection_id not in upstream.bad_signatures
