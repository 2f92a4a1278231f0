"""Two clusters on two databases of one Redis server stay apart. Redis keeps keys per database
but pub/sub channels per server, so the database number is part of fastpush's prefix there."""
from __future__ import annotations

import fastpush
from tests.helpers import JSON_V1, ServerView, connect


async def test_clusters_on_two_databases_never_hear_each_other(redis_server, hub_name):
    async with fastpush.Server(port=0, redis_url=redis_server.url + "/1") as one, \
            fastpush.Server(port=0, redis_url=redis_server.url + "/2") as two:
        client_one = await connect(ServerView.of(one), hub_name, JSON_V1, user_id="alice")
        client_two = await connect(ServerView.of(two), hub_name, JSON_V1, user_id="alice")
        await one.hub(hub_name).send_to_all("to all, database 1", content_type="text/plain")
        await one.hub(hub_name).send_to_user("alice", "to alice, database 1", content_type="text/plain")
        await two.hub(hub_name).send_to_all("to all, database 2", content_type="text/plain")
        # each gets its own cluster's messages first: the other's, sent before, never arrived
        assert [(await client_one.recv())["data"] for _ in range(2)] == ["to all, database 1",
                                                                         "to alice, database 1"]
        assert (await client_two.recv())["data"] == "to all, database 2"
        # and the registries are apart too: neither cluster knows the other's connection
        assert not await one.hub(hub_name).connection_exists(client_two.connection_id)
        assert await two.hub(hub_name).connection_exists(client_two.connection_id)
