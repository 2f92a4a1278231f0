"""The last-value cache (lastValueGroups), on real sockets: a connection joining a cached group by
its token, a join request, a REST add or its user's group gets the group's latest messages at
once, after `connected`, then the live ones, none twice and none missed (also while sends and
joins race); a reliable client numbers them like any message; an expired message is never
served; REST GET .../lastValue answers with them. Clients: raw WebSocket, the JSON subprotocols,
and the Python client SDK (azure-messaging-webpubsubclient) on json and json.reliable."""
from __future__ import annotations

import asyncio
import json
import threading

import pytest
from azure.core.rest import HttpRequest
from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubProtocolType
from azure.messaging.webpubsubservice import WebPubSubServiceClient

import fastpush
from fastpush.config import Config, HubSettings
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url, connect, eventually

KEY = "last-value-test-access-key-0123456789abcdefghij"
HUB = "ticker"
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


@pytest.fixture
async def server():
    config = Config(hubs={HUB: HubSettings(last_value_groups=["prices.*", "deep.**"], last_value_depth=3)})
    async with fastpush.Server(port=0, access_key=KEY, config=config) as srv:
        yield srv


def _service(server) -> WebPubSubServiceClient:
    return WebPubSubServiceClient.from_connection_string(server.connection_string, hub=HUB)


async def _rest_send(server, group: str, value: object, ttl: int | None = None) -> None:
    """A REST group send (JSON), through the service SDK, or raw HTTP for a TTL."""
    if ttl is None:
        await asyncio.to_thread(_service(server).send_to_group, group, value, content_type="application/json")
        return
    request = HttpRequest("POST", f"/api/hubs/{HUB}/groups/{group}/:send",
                          params={"api-version": "2024-12-01", "messageTtlSeconds": str(ttl)},
                          headers={"Content-Type": "application/json"}, content=json.dumps(value))
    response = await asyncio.to_thread(_service(server).send_request, request)
    assert response.status_code == 202, response.text()


async def _last_value(server, group: str) -> tuple[int, object]:
    request = HttpRequest("GET", f"/api/hubs/{HUB}/groups/{group}/lastValue", params={"api-version": "2024-12-01"})
    response = await asyncio.to_thread(_service(server).send_request, request)
    return response.status_code, response.json()


async def _group_data(client, count: int) -> list[object]:
    out = []
    for _ in range(count):
        message = await client.recv()
        assert message["type"] == "message" and message["from"] == "group", message
        out.append(message["data"])
    return out


async def test_a_token_group_gets_the_latest_after_connected_then_live(server):
    view = ServerView.of(server)
    for i in range(5):
        await _rest_send(server, "prices.AAPL", {"px": i})
    client = await connect(view, HUB, JSON_V1, groups=["prices.AAPL"])  # connect() read `connected` first
    assert await _group_data(client, 3) == [{"px": 2}, {"px": 3}, {"px": 4}]  # depth 3, oldest first
    await _rest_send(server, "prices.AAPL", {"px": 5})
    assert await _group_data(client, 1) == [{"px": 5}]
    await client.expect_silence()


async def test_a_join_request_and_a_raw_client(server):
    view = ServerView.of(server)
    await _rest_send(server, "prices.MSFT", {"px": 1})
    raw = await connect(view, HUB, groups=["prices.MSFT"])  # a raw client gets the data alone
    assert json.loads(await raw.recv()) == {"px": 1}
    client = await connect(view, HUB, JSON_V1, roles=ROLES)
    ack = await client.request({"type": "joinGroup", "group": "prices.MSFT"})
    assert ack["success"] is True
    assert await _group_data(client, 1) == [{"px": 1}]
    again = await client.request({"type": "joinGroup", "group": "prices.MSFT"})  # already a member: nothing
    assert again["success"] is True
    await client.expect_silence()


async def test_groups_outside_the_patterns_are_not_cached(server):
    view = ServerView.of(server)
    await _rest_send(server, "prices.a.b", 1)  # '*' does not cross '.'
    await _rest_send(server, "chat", 2)
    client = await connect(view, HUB, JSON_V1, groups=["prices.a.b", "chat"])
    await client.expect_silence()
    assert (await _last_value(server, "chat"))[0] == 404
    await _rest_send(server, "deep.a.b", 3)  # '**' does
    assert await _last_value(server, "deep.a.b") == (200, [{"dataType": "json", "data": 3}])


async def test_rest_add_to_group_and_a_users_group(server):
    view = ServerView.of(server)
    service = _service(server)
    await _rest_send(server, "prices.IBM", {"px": 7})
    client = await connect(view, HUB, JSON_V1)
    await asyncio.to_thread(service.add_connection_to_group, "prices.IBM", client.connection_id)
    assert await _group_data(client, 1) == [{"px": 7}]
    await asyncio.to_thread(service.add_user_to_group, "prices.IBM", "ann")
    ann = await connect(view, HUB, JSON_V1, user_id="ann")  # her group applies to a new connection
    assert await _group_data(ann, 1) == [{"px": 7}]
    await ann.expect_silence()


async def test_a_reliable_client_numbers_cached_messages_like_any(server):
    view = ServerView.of(server)
    await _rest_send(server, "prices.X", "a")
    await _rest_send(server, "prices.X", "b")
    client = await connect(view, HUB, JSON_RELIABLE_V1, groups=["prices.X"])
    first, second = await client.recv(), await client.recv()
    await _rest_send(server, "prices.X", "c")
    third = await client.recv()
    assert [m["data"] for m in (first, second, third)] == ["a", "b", "c"]
    assert [m["sequenceId"] for m in (first, second, third)] == [1, 2, 3]


async def test_expired_messages_are_never_served(server):
    view = ServerView.of(server)
    await _rest_send(server, "prices.T", "kept")
    await _rest_send(server, "prices.T", "short", ttl=1)
    assert await _last_value(server, "prices.T") == (200, [{"dataType": "json", "data": "kept"},
                                                            {"dataType": "json", "data": "short"}])
    assert await eventually(async_equals(lambda: _last_value(server, "prices.T"),
                                         (200, [{"dataType": "json", "data": "kept"}])), 5)
    client = await connect(view, HUB, JSON_V1, groups=["prices.T"])
    assert await _group_data(client, 1) == ["kept"]
    await client.expect_silence()


def async_equals(fetch, expected):
    async def check() -> bool:
        return await fetch() == expected
    return check


async def test_rest_shape_of_each_data_type(server):
    view = ServerView.of(server)
    sender = await connect(view, HUB, JSON_V1, user_id="bob", roles=ROLES)
    await sender.request({"type": "sendToGroup", "group": "prices.Z", "dataType": "text", "data": "hi"})
    await sender.request({"type": "sendToGroup", "group": "prices.Z", "dataType": "binary", "data": "AAEC"})
    await sender.request({"type": "sendToGroup", "group": "prices.Z", "dataType": "json", "data": {"a": [1]}})
    assert await _last_value(server, "prices.Z") == (200, [
        {"dataType": "text", "data": "hi", "fromUserId": "bob"},
        {"dataType": "binary", "data": "AAEC", "fromUserId": "bob"},
        {"dataType": "json", "data": {"a": [1]}, "fromUserId": "bob"}])
    assert await _last_value(server, "prices.EMPTY") == (200, [])


@pytest.mark.parametrize("rounds", [15])
async def test_sends_racing_joins_are_seen_once_in_order(server, rounds):
    """A sender streams numbered messages while clients join mid-stream: each joiner sees the
    cached ones, then every later one, in order, none twice (depth 3: it starts at most 3 back)."""
    view = ServerView.of(server)
    sender = await connect(view, HUB, JSON_V1, roles=ROLES)
    total = 60

    async def send_all() -> None:
        for i in range(total):
            await sender.send({"type": "sendToGroup", "group": "prices.RACE", "dataType": "json", "data": i})
            if i % 4 == 0:
                await asyncio.sleep(0)

    for round_ in range(rounds):
        await sender.send({"type": "sendToGroup", "group": "prices.RACE", "dataType": "json", "data": -1})
        joiner = await connect(view, HUB, JSON_V1, roles=ROLES)
        sending = asyncio.create_task(send_all())
        await asyncio.sleep(0.001 * (round_ % 5))
        await joiner.send({"type": "joinGroup", "group": "prices.RACE"})
        await sending
        seen: list[int] = []
        while not seen or seen[-1] != total - 1:
            message = await joiner.recv()
            if message.get("type") == "message":
                seen.append(message["data"])
        start = seen[0]
        assert seen == list(range(start, total)), seen
        assert start >= -1
        await joiner.close()


class _SdkReceiver:
    """The Python client SDK, its group messages collected from its callback threads."""

    def __init__(self, url: str, protocol: WebPubSubProtocolType):
        self.sdk = WebPubSubClient(url, protocol_type=protocol, ack_timeout=2.0, start_timeout=5.0)
        self.messages: list[tuple[int | None, object]] = []
        self._lock = threading.Lock()
        self.sdk.subscribe(CallbackType.GROUP_MESSAGE, self._on_group)

    def _on_group(self, event) -> None:
        with self._lock:
            self.messages.append((event.sequence_id, event.data))

    def data(self) -> list[object]:
        """In the order the server numbered them (the SDK runs each callback on a thread of its own)."""
        with self._lock:
            return [data for _, data in sorted(self.messages, key=lambda m: m[0] or 0)]


@pytest.mark.parametrize("protocol", [WebPubSubProtocolType.JSON_RELIABLE, WebPubSubProtocolType.JSON])
async def test_the_python_client_sdk_joins_and_gets_the_latest(server, protocol):
    view = ServerView.of(server)
    for i in range(4):
        await _rest_send(server, "prices.SDK", {"px": i})
    receiver = _SdkReceiver(client_url(view, HUB, roles=ROLES), protocol)
    await asyncio.to_thread(receiver.sdk.open)
    try:
        await asyncio.to_thread(receiver.sdk.join_group, "prices.SDK")
        assert await eventually(lambda: len(receiver.messages) >= 3, 10)
        await _rest_send(server, "prices.SDK", {"px": 4})
        assert await eventually(lambda: len(receiver.messages) >= 4, 10)
        expected = [{"px": 1}, {"px": 2}, {"px": 3}, {"px": 4}]
        if protocol is WebPubSubProtocolType.JSON_RELIABLE:
            assert receiver.data() == expected
            assert sorted(s for s, _ in receiver.messages) == [1, 2, 3, 4]
        else:  # no sequence ids to order by: the same messages, once each
            assert sorted(receiver.messages, key=lambda m: m[1]["px"]) == [(None, m) for m in expected]
    finally:
        await asyncio.to_thread(receiver.sdk.close)
