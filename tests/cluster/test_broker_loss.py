"""A node whose Redis goes silent (a cut link: no reset, nothing closes) notices it by its pings,
refuses sends, and once that has lasted --broker-loss-timeout closes its clients with 1012 and ends
their sessions; it admits no client until Redis is back. /metrics counts those closes and says
whether the node has Redis. Runs anywhere: the silence is a proxy
holding every byte (tests/cluster/test_partition.py cuts a real link between namespaces)."""
from __future__ import annotations

import pytest
import websockets

import fastpush
from fastpush.app import BROKER_LOST_REASON
from tests.cluster.test_cluster import arest
from tests.conftest import ACCESS_KEY
from tests.fault_proxy import FaultProxy
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url, connect, eventually
from tests.metrics_client import Scraper, value

CLOSES = "fastpush_broker_loss_closes_total"

pytestmark = pytest.mark.timeout(90)


async def test_a_node_that_lost_redis_closes_its_clients_then_serves_again(redis_server, hub_name):
    proxy = await FaultProxy(redis_server.port).start()
    try:
        async with fastpush.Server(port=0, access_key=ACCESS_KEY, redis_url=f"redis://127.0.0.1:{proxy.port}",
                                   broker_loss_timeout_seconds=1.0) as node:
            view = ServerView(node.endpoint, ACCESS_KEY)
            scraper = Scraper(node.endpoint + "/metrics", ACCESS_KEY)
            send = f"/api/hubs/{hub_name}/:send"
            plain = await connect(view, hub_name, JSON_V1)
            reliable = await connect(view, hub_name, JSON_RELIABLE_V1)
            assert (await arest(view, "POST", send, b"before"))[0] == 202
            assert (await plain.recv())["data"] == "before"
            assert (await reliable.recv())["data"] == "before"

            before = await scraper.scrape()  # the counters are the process's: other tests' closes included
            assert value(before, "fastpush_broker_up", broker="redis") == 1
            proxy.hold()  # Redis goes silent
            assert await eventually(lambda: not node.node.broker.health()["healthy"], 15), "the pings missed it"
            assert (await arest(view, "POST", send, b"during"))[0] == 503
            for client in (plain, reliable):  # told why, then closed with 1012 (the SDKs reconnect)
                told = await client.recv(timeout=15)
                assert told == {"type": "system", "event": "disconnected", "message": BROKER_LOST_REASON}, told
                with pytest.raises(websockets.ConnectionClosed):
                    await client.recv(timeout=15)
                assert (client.ws.close_code, client.ws.close_reason) == (1012, BROKER_LOST_REASON)
            with pytest.raises(websockets.InvalidStatus) as refused:
                await connect(view, hub_name, JSON_V1)
            assert refused.value.response.status_code == 503
            during = await scraper.scrape()
            assert value(during, "fastpush_broker_up", broker="redis") == 0
            assert value(during, CLOSES) - value(before, CLOSES) == 2  # the plain client and the reliable one

            proxy.release()
            assert await eventually(lambda: node.node.broker.health()["healthy"], 30), "no reconnect"
            assert await eventually(lambda: proxy.accepted >= 4, 5)  # two connections, then two new ones
            # The session ended: its messages sent meanwhile are gone, so it is not recovered as if whole.
            recovery = client_url(view, hub_name) + (f"&awps_connection_id={reliable.connection_id}"
                                                     f"&awps_reconnection_token={reliable.reconnection_token}")
            async with websockets.connect(recovery, subprotocols=[JSON_RELIABLE_V1]) as ws:
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1008, (ws.close_code, ws.close_reason)
            again = await connect(view, hub_name, JSON_V1)
            assert (await arest(view, "POST", send, b"after"))[0] == 202
            assert (await again.recv())["data"] == "after"
            after = await scraper.scrape()
            assert value(after, "fastpush_broker_up", broker="redis") == 1
            assert value(after, CLOSES) == value(during, CLOSES)  # a node back closes nobody
    finally:
        await proxy.stop()
