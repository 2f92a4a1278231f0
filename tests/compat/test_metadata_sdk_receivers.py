"""The client SDKs receive group messages that carry `metadata` (a newer field of the client
protocol none of them reads yet) as they receive any other: the data, the group, the sender."""
from __future__ import annotations

from tests.compat.drivers import ClientDriver, Message
from tests.helpers import JSON_V1, client_url, connect

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


async def test_sdk_receivers_take_messages_with_metadata(driver: ClientDriver, server, hub_name):
    client = await driver.client(client_url(server, hub_name, user_id="sdk", roles=ROLES), "reliable")
    try:
        await client.start()
        await client.join_group("g")
        sender = await connect(server, hub_name, JSON_V1, user_id="ann", roles=ROLES)
        ack = await sender.request({"type": "sendToGroup", "group": "g", "dataType": "json", "data": {"n": 1},
                                    "metadata": {"trace-id": "abc"}})
        assert ack["success"]
        assert await client.message() == Message("g", "ann", "json", {"n": 1})
        await sender.close()
    finally:
        await client.dispose()
