"""Group presence events on nodes sharing Redis: the node that holds the connection tells the
upstream, once, whichever node took the REST call; a reliable session that recovers onto
another node moves with its groups and leaves and joins nothing on the way."""
from __future__ import annotations

import asyncio
import contextlib
import json

import websockets

import fastpush
from fastpush.config import Config, EventHandlerSettings, GroupPresenceEventFilters, HubSettings
from tests.conftest import ACCESS_KEY
from tests.events.upstream_server import Upstream
from tests.helpers import JSON_RELIABLE_V1, ServerView, client_url, eventually

HUB = "presencecluster"


def presence_of(upstream: Upstream, connection_id: str) -> list[tuple[str, str]]:
    return [(r.headers["ce-eventname"], json.loads(r.body)["group"]) for r in upstream.requests
            if r.method == "POST" and r.headers.get("ce-connectionid") == connection_id
            and r.headers.get("ce-type", "").startswith("azure.webpubsub.gp.")]


async def test_presence_across_nodes_and_a_session_moving(redis_server):
    upstream = Upstream([ACCESS_KEY])
    handler = EventHandlerSettings(upstream.url_template(), system_events=["disconnected"],
                                   group_presence_events=GroupPresenceEventFilters(["joined", "left"]))
    config = Config(hubs={HUB: HubSettings(event_handlers=[handler])})
    try:
        async with contextlib.AsyncExitStack() as stack:
            first, second = [await stack.enter_async_context(
                fastpush.Server(port=0, access_key=ACCESS_KEY, redis_url=redis_server.url, config=config))
                for _ in range(2)]
            ws = await websockets.connect(client_url(ServerView.of(first), HUB, groups=["room"]),
                                          subprotocols=[JSON_RELIABLE_V1])
            hello = json.loads(await ws.recv())
            cid = hello["connectionId"]
            assert await second.hub(HUB).add_connection_to_group("room2", cid)  # applied on the first node
            assert await eventually(lambda: len(presence_of(upstream, cid)) == 2)

            ws.transport.abort()
            await asyncio.sleep(0.1)
            url = client_url(ServerView.of(second), HUB) + (f"&awps_connection_id={cid}"
                                                             f"&awps_reconnection_token={hello['reconnectionToken']}")
            ws2 = await websockets.connect(url, subprotocols=[JSON_RELIABLE_V1])
            assert json.loads(await ws2.recv())["connectionId"] == cid  # resumed on the second node
            await ws2.close()
            assert await eventually(lambda: any(r.headers.get("ce-connectionid") == cid
                                                for r in upstream.events("disconnected")))
            assert await eventually(lambda: len(presence_of(upstream, cid)) >= 4)
            events = presence_of(upstream, cid)
            assert events[:2] == [("joined", "room"), ("joined", "room2")]
            assert sorted(events[2:]) == [("left", "room"), ("left", "room2")]  # once, from the second node
            assert upstream.bad_signatures == []
    finally:
        upstream.close()
