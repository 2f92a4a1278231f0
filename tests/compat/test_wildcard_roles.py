"""Wildcard group roles with the official Python server SDK: one token covers a family of ticker
groups; literal and pattern roles mix; REST CheckPermission sees the patterns (one node, and a
cluster where the check runs on another node than the client's)."""
from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import jwt
import pytest
import websockets
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.helpers import JSON_V1, client_token, connect

ROLES = ["webpubsub.joinLeaveGroups.prices.*", "webpubsub.sendToGroups.prices.**", "webpubsub.sendToGroup.lobby"]


@pytest.fixture
def sdk(deployment, hub_name):
    return WebPubSubServiceClient.from_connection_string(deployment.connection_string, hub=hub_name)


async def _ticker_client(deployment, sdk):
    token = await asyncio.to_thread(sdk.get_client_access_token, roles=ROLES)
    url = token["url"].replace(deployment.rest.endpoint.split("://")[1], deployment.endpoint.split("://")[1])
    return await connect(deployment, "", JSON_V1, url=url)


async def test_one_token_covers_a_family_of_groups(deployment, sdk):
    client = await _ticker_client(deployment, sdk)
    for group, joins in [("prices.msft", True), ("prices.", True), ("prices.us.msft", False), ("prices", False),
                         ("news.msft", False), ("lobby", False)]:
        ack = await client.request({"type": "joinGroup", "group": group})
        assert ack["success"] is joins, (group, ack)
        if not joins:
            assert ack["error"]["name"] == "Forbidden"
    for group, sends in [("prices.us.msft", True), ("prices.msft", True), ("lobby", True), ("prices", False),
                         ("lobbyist", False)]:
        ack = await client.request({"type": "sendToGroup", "group": group, "dataType": "text", "data": "x"})
        assert ack["success"] is sends, (group, ack)
    await client.close()


async def test_check_permission_sees_wildcard_roles(deployment, sdk):
    client = await _ticker_client(deployment, sdk)
    def check(permission: str, group: str):
        return asyncio.to_thread(sdk.has_permission, permission, client.connection_id, target_name=group)
    assert await check("sendToGroup", "prices.eu.sap") is True
    assert await check("joinLeaveGroup", "prices.sap") is True
    assert await check("joinLeaveGroup", "prices.eu.sap") is False
    assert await check("sendToGroup", "news") is False
    await client.close()


async def test_a_pattern_with_six_stars_is_refused(server, hub_name):
    token = client_token(server.access_key, server.endpoint, hub_name, roles=["webpubsub.sendToGroups.*.*.*.*.*.*"])
    url = "ws" + server.endpoint[4:] + f"/client/hubs/{hub_name}?access_token={token}"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url)
    assert refused.value.response.status_code == 401
    assert b"more than 5" in refused.value.response.body
    # The SDK mints client tokens itself; :generateToken is what the service (and fastpush) answer.
    target = f"/api/hubs/{hub_name}/:generateToken?api-version=2024-12-01&role=webpubsub.joinLeaveGroups.a%5C"
    rest_token = jwt.encode({"aud": server.endpoint + target, "exp": int(time.time()) + 60}, server.access_key.encode())
    request = urllib.request.Request(server.endpoint + target, method="POST",
                                     headers={"Authorization": f"Bearer {rest_token}"})
    with pytest.raises(urllib.error.HTTPError) as bad:
        await asyncio.to_thread(urllib.request.urlopen, request)
    assert bad.value.code == 400 and b"must be followed by" in bad.value.read()
    ok = jwt.decode(client_token(server.access_key, server.endpoint, hub_name, roles=ROLES),
                    options={"verify_signature": False})
    assert ok["role"] == ROLES
