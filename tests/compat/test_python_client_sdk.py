"""The Python client SDK (azure-messaging-webpubsubclient 1.1.0), unmodified, against fastpush.

Every test runs with the SDK's default `json.reliable.webpubsub.azure.v1` and with plain
`json.webpubsub.azure.v1`, and checks each SDK call by what other clients receive: the SDK client
itself, a `json.webpubsub.azure.v1` test client and a raw WebSocket test client.

The SDK loses the wakeup of an ack that arrives before its sending thread waits for it, and
then sits out the whole `ack_timeout` before returning success; open() has the
same race with the handshake and then sits out `start_timeout`. The tests shorten both so a miss
costs seconds, not 30 s; `test_many_acked_calls_all_succeed` measures how often acks are missed.
"""
from __future__ import annotations

import asyncio
import json
import queue
import statistics
import time

import pytest
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import (
    CallbackType, SendMessageError, WebPubSubDataType, WebPubSubProtocolType,
)

from tests.compat.client_sdk_common import ROLES, bob_in, group_message
from tests.helpers import client_url, connect

ACK_TIMEOUT = 2.0  # far above a real ack's latency (< 10 ms here); what an S12 miss costs
START_TIMEOUT = 5.0  # far above a real open (< 10 ms here); what a missed open wakeup costs
EVENT_TIMEOUT = 10.0


class PyClient:
    """A WebPubSubClient whose events (delivered on SDK threads) queue up for the test to await."""

    def __init__(self, credential, protocol: WebPubSubProtocolType, **options):
        self.sdk = WebPubSubClient(credential, protocol_type=protocol, ack_timeout=ACK_TIMEOUT,
                                   start_timeout=START_TIMEOUT, **options)
        self.connection_id: str | None = None
        self._events: queue.Queue = queue.Queue()
        for kind in CallbackType:
            self.sdk.subscribe(kind, lambda *args, kind=kind: self._events.put((kind, args[0] if args else None)))

    async def call(self, method: str, *args, **kwargs):
        """SDK calls block until their ack: run them off the test's event loop."""
        return await asyncio.to_thread(getattr(self.sdk, method), *args, **kwargs)

    async def event(self) -> tuple[CallbackType, object]:
        return await asyncio.to_thread(self._events.get, timeout=EVENT_TIMEOUT)

    async def message(self) -> tuple[str, ...]:
        """The next server or group message as (group or "server", fromUserId, dataType, data)."""
        kind, args = await self.event()
        data = bytes(args.data) if args.data_type == WebPubSubDataType.BINARY else args.data
        if kind == CallbackType.SERVER_MESSAGE:
            return "server", None, args.data_type, data
        assert kind == CallbackType.GROUP_MESSAGE, (kind, vars(args))
        return args.group, args.from_user_id, args.data_type, data

    async def open(self) -> tuple[str, str | None]:
        """open() returns at the upgrade; the connection id comes with the `connected` event."""
        await self.call("open")
        kind, connected = await self.event()
        assert kind == CallbackType.CONNECTED, kind
        self.connection_id = connected.connection_id
        return connected.connection_id, connected.user_id


@pytest.fixture(params=[WebPubSubProtocolType.JSON_RELIABLE, WebPubSubProtocolType.JSON], ids=["reliable", "json"])
def protocol(request) -> WebPubSubProtocolType:
    return request.param


@pytest.fixture
async def sdk_client(server, hub_name, protocol):
    """Alice's SDK client, opened, with the roles to join, leave and send; closed at the end."""
    client = PyClient(client_url(server, hub_name, user_id="alice", roles=ROLES), protocol)
    await client.open()
    yield client
    await client.call("close")




async def on_hub(server, hub: str, method: str, *args, **kwargs):
    """Call the embedding API's `method` for `hub` on the server's loop (the API is not thread-safe)."""
    return await server.acall(lambda: getattr(server.server.hub(hub), method)(*args, **kwargs))


async def expect_only_marker(client: PyClient, server, hub: str) -> None:
    """Nothing else is on its way to the SDK client: a marker sent to its connection now is the next message."""
    await on_hub(server, hub, "send_to_connection", client.connection_id, "marker", content_type="text/plain")
    assert await client.message() == ("server", None, "text", "marker")


# --- connecting --------------------------------------------------------------------------------

async def test_open_and_close(server, hub_name, protocol):
    """open() with a credential callback: `connected` carries the token's user; close() ends the
    connection on the server (no reliable session lingers) and emits disconnected, then stopped."""
    url = client_url(server, hub_name, user_id="carol")
    client = PyClient(WebPubSubClientCredential(client_access_url_provider=lambda: url), protocol)
    connection_id, user_id = await client.open()
    assert user_id == "carol"
    assert await on_hub(server, hub_name, "connection_exists", connection_id)

    await client.call("close")

    kind, disconnected = await client.event()
    assert (kind, disconnected.connection_id) == (CallbackType.DISCONNECTED, connection_id)
    assert (await client.event())[0] == CallbackType.STOPPED
    assert not await on_hub(server, hub_name, "connection_exists", connection_id)


# --- groups ------------------------------------------------------------------------------------

async def test_join_send_to_group_and_leave(server, hub_name, sdk_client):
    """Text, JSON and binary sent by the SDK reach a JSON member, a raw member (in the group through
    its token) and, echoed, the SDK itself; after leave_group the group's messages stop coming."""
    await sdk_client.call("join_group", "room")
    bob = await bob_in(server, hub_name, "room")
    raw = await connect(server, hub_name, groups=["room"])

    await sdk_client.call("send_to_group", "room", "hello", WebPubSubDataType.TEXT)
    assert await sdk_client.message() == ("room", "alice", "text", "hello")
    assert await bob.recv() == group_message("room", "alice", "text", "hello")
    assert await raw.recv() == "hello"

    await sdk_client.call("send_to_group", "room", {"price": 101.5, "symbol": "ACME"}, WebPubSubDataType.JSON)
    assert await sdk_client.message() == ("room", "alice", "json", {"price": 101.5, "symbol": "ACME"})
    assert await bob.recv() == group_message("room", "alice", "json", {"price": 101.5, "symbol": "ACME"})
    assert json.loads(await raw.recv()) == {"price": 101.5, "symbol": "ACME"}

    await sdk_client.call("send_to_group", "room", memoryview(b"\x00\x01\xfe\xff"), WebPubSubDataType.BINARY)
    assert await sdk_client.message() == ("room", "alice", "binary", b"\x00\x01\xfe\xff")
    assert await bob.recv() == group_message("room", "alice", "binary", "AAH+/w==")
    assert await raw.recv() == b"\x00\x01\xfe\xff"

    assert (await bob.request({"type": "sendToGroup", "group": "room", "dataType": "text", "data": "hi alice",
                               "noEcho": True}))["success"]
    assert await sdk_client.message() == ("room", "bob", "text", "hi alice")
    assert await raw.recv() == "hi alice"

    await sdk_client.call("leave_group", "room")
    await bob.request({"type": "sendToGroup", "group": "room", "dataType": "text", "data": "gone?"})
    assert (await raw.recv(), (await bob.recv())["data"]) == ("gone?", "gone?")
    await expect_only_marker(sdk_client, server, hub_name)


async def test_send_to_group_no_echo(server, hub_name, sdk_client):
    """no_echo=True: every other member gets the message, the sender does not."""
    await sdk_client.call("join_group", "room")
    bob = await bob_in(server, hub_name, "room")

    for data, data_type, wire in (("quiet", "text", "quiet"), ({"n": 1}, "json", {"n": 1}),
                                  (memoryview(b"\xff"), "binary", "/w==")):
        await sdk_client.call("send_to_group", "room", data, WebPubSubDataType(data_type), no_echo=True)
        assert await bob.recv() == group_message("room", "alice", data_type, wire)
    await expect_only_marker(sdk_client, server, hub_name)


async def test_send_to_group_without_ack(server, hub_name, sdk_client):
    """ack=False sends no ackId (fire and forget); the message still reaches the group."""
    await sdk_client.call("join_group", "room")
    bob = await bob_in(server, hub_name, "room")
    await sdk_client.call("send_to_group", "room", "unacked", WebPubSubDataType.TEXT, ack=False, no_echo=True)
    assert await bob.recv() == group_message("room", "alice", "text", "unacked")


async def test_join_without_permission_is_forbidden(server, hub_name, protocol):
    """A token without joinLeaveGroup: the SDK surfaces the server's Forbidden ack (retries off)."""
    client = PyClient(client_url(server, hub_name, user_id="mallory"), protocol, message_retry_total=0)
    await client.open()
    with pytest.raises(SendMessageError) as refused:
        await client.call("join_group", "room")
    assert refused.value.error_detail.name == "Forbidden"
    assert not await on_hub(server, hub_name, "group_exists", "room")
    await client.call("close")


async def test_repeated_ack_id_is_sent_once(server, hub_name, sdk_client):
    """An explicit ack_id used twice: the server answers the second with Duplicate, which the SDK
    counts as success, and the group gets the message once."""
    await sdk_client.call("join_group", "room")
    bob = await bob_in(server, hub_name, "room")
    for _ in range(2):
        await sdk_client.call("send_to_group", "room", "once", WebPubSubDataType.TEXT, ack_id=1000, no_echo=True)
    await sdk_client.call("send_to_group", "room", "next", WebPubSubDataType.TEXT, no_echo=True)
    assert [(await bob.recv())["data"] for _ in range(2)] == ["once", "next"]


# --- events and server messages ----------------------------------------------------------------

async def test_send_event_is_acked(server, hub_name, sdk_client):
    """No event handler is configured: the server acks events (text, JSON, binary) and drops them;
    the connection stays usable."""
    await sdk_client.call("send_event", "ev-text", "txt", WebPubSubDataType.TEXT)
    await sdk_client.call("send_event", "ev-json", {"k": "v"}, WebPubSubDataType.JSON)
    await sdk_client.call("send_event", "ev-binary", memoryview(b"\xff\x00"), WebPubSubDataType.BINARY)
    await sdk_client.call("send_event", "ev-unacked", "txt", WebPubSubDataType.TEXT, ack=False)
    await expect_only_marker(sdk_client, server, hub_name)


async def test_server_messages_from_rest_and_embedding(server, hub_name, sdk_client, service):
    """server-message for REST sends (all, user, connection) in every data type, and group-message
    for a group send made through the embedding API."""
    await asyncio.to_thread(service.send_to_all, "to all", content_type="text/plain")
    assert await sdk_client.message() == ("server", None, "text", "to all")
    await asyncio.to_thread(service.send_to_user, "alice", {"to": "alice"})
    assert await sdk_client.message() == ("server", None, "json", {"to": "alice"})
    await asyncio.to_thread(service.send_to_connection, sdk_client.connection_id, b"\x00\xff",
                            content_type="application/octet-stream")
    assert await sdk_client.message() == ("server", None, "binary", b"\x00\xff")

    await sdk_client.call("join_group", "prices")
    await on_hub(server, hub_name, "send_to_group", "prices", {"symbol": "ACME", "price": 101.5})
    assert await sdk_client.message() == ("prices", None, "json", {"symbol": "ACME", "price": 101.5})


# --- the lost ack wakeup ----------------------------------------------------------------------

async def test_many_acked_calls_all_succeed(server, hub_name, protocol, sdk_client):
    """200 acked calls (send_to_group and join_group, alternately) all succeed, and a member gets
    each of the 100 sends exactly once: a lost ack wakeup delays a call, never repeats it.
    With -s it prints how many calls waited out the ack timeout."""
    bob = await bob_in(server, hub_name, "room")
    durations = []

    async def timed(method: str, *args, **kwargs) -> None:
        started = time.monotonic()
        await sdk_client.call(method, *args, **kwargs)
        durations.append(time.monotonic() - started)

    for n in range(100):
        await timed("send_to_group", "room", str(n), WebPubSubDataType.TEXT, no_echo=True)
        assert (await bob.recv())["data"] == str(n)  # read as we go: bob's socket keeps answering pings
        await timed("join_group", "room")
    await bob.expect_silence()

    waited = [d for d in durations if d > ACK_TIMEOUT / 2]
    prompt = [d for d in durations if d <= ACK_TIMEOUT / 2]
    print(f"\nS12 ({protocol.value}): {len(waited)}/200 calls waited out the "
          f"{ACK_TIMEOUT:.0f} s ack timeout; the others took median {statistics.median(prompt) * 1000:.2f} ms, "
          f"max {max(prompt) * 1000:.1f} ms")
