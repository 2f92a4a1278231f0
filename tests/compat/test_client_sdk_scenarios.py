"""The official client SDKs, unmodified, against fastpush: each scenario once, run through every
driver (tests/compat/drivers/: the Python SDK azure-messaging-webpubsubclient and the JS SDK
@azure/web-pubsub-client, each version installed) with the SDKs' default
`json.reliable.webpubsub.azure.v1` and with plain `json.webpubsub.azure.v1`.

Each SDK call is checked by what other clients receive: the SDK client itself (its events), a
`json.webpubsub.azure.v1` test client (Bob) and a raw WebSocket test client. Where the SDKs
differ the driver says so (`SdkClient.returns`: the JS SDK reports {ackId, isDuplicated} for a
send, the Python SDK returns None and raises on failure), so the scenarios stay the same.
Every scenario applies to every SDK; what is one SDK's own stays with its driver's docstring.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time

import pytest

from tests.compat.drivers import ACKED, UNACKED, ClientDriver, Message, SdkCallError, SdkClient, Sent
from tests.helpers import JSON_V1, Client, client_url, connect

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


@pytest.fixture(params=["reliable", "json"])
def protocol(request) -> str:
    return request.param


@pytest.fixture
async def make_client(driver: ClientDriver, server, hub_name, protocol):
    """Make SDK clients of the test's driver and protocol on the test's hub, not started, with a
    token of `claims` (client_token's); each is stopped and let go at the end of the test."""
    made: list[SdkClient] = []

    async def make(*, credential: bool = False, message_retries: int | None = None, **claims) -> SdkClient:
        client = await driver.client(client_url(server, hub_name, **claims), protocol, credential=credential,
                                     message_retries=message_retries)
        made.append(client)
        return client

    yield make
    await asyncio.gather(*(client.dispose() for client in made))


@pytest.fixture
async def alice(make_client) -> SdkClient:
    """Alice's SDK client, started, with the roles to join, leave and send."""
    client = await make_client(user_id="alice", roles=ROLES)
    await client.start()
    return client


async def bob_in(server, hub: str, group: str) -> Client:
    """Bob: a json.webpubsub.azure.v1 test client that has joined `group`."""
    bob = await connect(server, hub, JSON_V1, user_id="bob", roles=ROLES)
    assert (await bob.request({"type": "joinGroup", "group": group}))["success"]
    return bob


def group_message(group: str, from_user: str, data_type: str, data) -> dict:
    return {"type": "message", "from": "group", "group": group, "fromUserId": from_user,
            "dataType": data_type, "data": data}


async def on_hub(server, hub: str, method: str, *args, **kwargs):
    """Call the embedding API's `method` for `hub` on the server's loop (the API is not thread-safe)."""
    return await server.acall(lambda: getattr(server.server.hub(hub), method)(*args, **kwargs))


async def expect_only_marker(client: SdkClient, server, hub: str) -> None:
    """Nothing else is on its way to the SDK client: a marker sent to its connection now is the next message."""
    await on_hub(server, hub, "send_to_connection", client.connection_id, "marker", content_type="text/plain")
    assert await client.message() == Message("server", None, "text", "marker")


# --- connecting --------------------------------------------------------------------------------

async def test_start_and_stop(server, hub_name, make_client):
    """start() with a credential callback (JS {getClientAccessUrl}, Python WebPubSubClientCredential):
    `connected` carries the token's user; stop() ends the connection on the server (no reliable
    session lingers) and emits disconnected, then stopped."""
    client = await make_client(credential=True, user_id="carol")
    connection_id, user_id = await client.start()
    assert user_id == "carol"
    assert await on_hub(server, hub_name, "connection_exists", connection_id)

    await client.stop()

    disconnected = await client.event()
    assert (disconnected.kind, disconnected.connection_id) == ("disconnected", connection_id)
    assert (await client.event()).kind == "stopped"
    assert not await on_hub(server, hub_name, "connection_exists", connection_id)


# --- groups ------------------------------------------------------------------------------------

async def test_join_send_to_group_and_leave(server, hub_name, alice):
    """Text, JSON and binary sent by the SDK reach a JSON member, a raw member (in the group through
    its token) and, echoed, the SDK itself; after leaving the group its messages stop coming."""
    assert await alice.join_group("room") == alice.returns(ACKED)
    bob = await bob_in(server, hub_name, "room")
    raw = await connect(server, hub_name, groups=["room"])

    assert await alice.send_to_group("room", "hello", "text") == alice.returns(ACKED)
    assert await alice.message() == Message("room", "alice", "text", "hello")
    assert await bob.recv() == group_message("room", "alice", "text", "hello")
    assert await raw.recv() == "hello"

    assert await alice.send_to_group("room", {"price": 101.5, "symbol": "ACME"}, "json") == alice.returns(ACKED)
    assert await alice.message() == Message("room", "alice", "json", {"price": 101.5, "symbol": "ACME"})
    assert await bob.recv() == group_message("room", "alice", "json", {"price": 101.5, "symbol": "ACME"})
    assert json.loads(await raw.recv()) == {"price": 101.5, "symbol": "ACME"}

    assert await alice.send_to_group("room", b"\x00\x01\xfe\xff", "binary") == alice.returns(ACKED)
    assert await alice.message() == Message("room", "alice", "binary", b"\x00\x01\xfe\xff")
    assert await bob.recv() == group_message("room", "alice", "binary", "AAH+/w==")
    assert await raw.recv() == b"\x00\x01\xfe\xff"

    assert (await bob.request({"type": "sendToGroup", "group": "room", "dataType": "text", "data": "hi alice",
                               "noEcho": True}))["success"]
    assert await alice.message() == Message("room", "bob", "text", "hi alice")
    assert await raw.recv() == "hi alice"

    assert await alice.leave_group("room") == alice.returns(ACKED)
    await bob.request({"type": "sendToGroup", "group": "room", "dataType": "text", "data": "gone?"})
    assert (await raw.recv(), (await bob.recv())["data"]) == ("gone?", "gone?")
    await expect_only_marker(alice, server, hub_name)


async def test_send_to_group_no_echo(server, hub_name, alice):
    """noEcho: every other member gets the message, the sender does not."""
    await alice.join_group("room")
    bob = await bob_in(server, hub_name, "room")

    for data, data_type, wire in (("quiet", "text", "quiet"), ({"n": 1}, "json", {"n": 1}),
                                  (b"\xff", "binary", "/w==")):
        assert await alice.send_to_group("room", data, data_type, no_echo=True) == alice.returns(ACKED)
        assert await bob.recv() == group_message("room", "alice", data_type, wire)
    await expect_only_marker(alice, server, hub_name)


async def test_send_to_group_fire_and_forget(server, hub_name, alice):
    """Fire and forget (JS fireAndForget, Python ack=False) sends no ackId (the JS result has none);
    the message still reaches the group."""
    await alice.join_group("room")
    bob = await bob_in(server, hub_name, "room")
    assert await alice.send_to_group("room", "unacked", "text", no_echo=True, ack=False) == alice.returns(UNACKED)
    assert await bob.recv() == group_message("room", "alice", "text", "unacked")


async def test_join_without_permission_is_forbidden(server, hub_name, make_client):
    """A token without joinLeaveGroup: the SDK surfaces the server's Forbidden ack (retries off)."""
    client = await make_client(user_id="mallory", message_retries=0)
    await client.start()
    with pytest.raises(SdkCallError) as refused:
        await client.join_group("room")
    assert (refused.value.name, refused.value.detail) == ("SendMessageError", "Forbidden")
    assert not await on_hub(server, hub_name, "group_exists", "room")


async def test_repeated_ack_id_is_sent_once(server, hub_name, alice):
    """An explicit ackId used twice: the server answers the second with Duplicate, which the SDK
    counts as success (JS: isDuplicated), and the group gets the message once."""
    await alice.join_group("room")
    bob = await bob_in(server, hub_name, "room")
    sent = [await alice.send_to_group("room", "once", "text", no_echo=True, ack_id=1000) for _ in range(2)]
    assert sent == [alice.returns(Sent(1000, duplicated=False)), alice.returns(Sent(1000, duplicated=True))]
    await alice.send_to_group("room", "next", "text", no_echo=True)
    assert [(await bob.recv())["data"] for _ in range(2)] == ["once", "next"]


# --- events and server messages ----------------------------------------------------------------

async def test_send_event_is_acked(server, hub_name, alice):
    """No event handler is configured: the server acks events (text, JSON, binary) and drops them;
    the connection stays usable."""
    assert await alice.send_event("ev-text", "txt", "text") == alice.returns(ACKED)
    assert await alice.send_event("ev-json", {"k": "v"}, "json") == alice.returns(ACKED)
    assert await alice.send_event("ev-binary", b"\xff\x00", "binary") == alice.returns(ACKED)
    assert await alice.send_event("ev-unacked", "txt", "text", ack=False) == alice.returns(UNACKED)
    await expect_only_marker(alice, server, hub_name)


async def test_server_messages_from_rest_and_embedding(server, hub_name, alice, service):
    """server-message for REST sends (all, user, connection) in every data type, and group-message
    for a group send made through the embedding API."""
    await asyncio.to_thread(service.send_to_all, "to all", content_type="text/plain")
    assert await alice.message() == Message("server", None, "text", "to all")
    await asyncio.to_thread(service.send_to_user, "alice", {"to": "alice"})
    assert await alice.message() == Message("server", None, "json", {"to": "alice"})
    await asyncio.to_thread(service.send_to_connection, alice.connection_id, b"\x00\xff",
                            content_type="application/octet-stream")
    assert await alice.message() == Message("server", None, "binary", b"\x00\xff")

    await alice.join_group("prices")
    await on_hub(server, hub_name, "send_to_group", "prices", {"symbol": "ACME", "price": 101.5})
    assert await alice.message() == Message("prices", None, "json", {"symbol": "ACME", "price": 101.5})


# --- many acked calls (the Python SDK's lost ack wakeup) ---------------------------------------

async def test_many_acked_calls_all_succeed(server, hub_name, driver, protocol, alice):
    """200 acked calls (sendToGroup and joinGroup, alternately) all succeed, and a member gets
    each of the 100 sends exactly once: a lost ack wakeup (Python SDK, see its driver) delays a
    call, never repeats it. With -s it prints how many calls waited out the SDK's ack timeout."""
    bob = await bob_in(server, hub_name, "room")
    durations = []

    async def timed(call) -> None:
        started = time.monotonic()
        assert await call == alice.returns(ACKED)
        durations.append(time.monotonic() - started)

    for n in range(100):
        await timed(alice.send_to_group("room", str(n), "text", no_echo=True))
        assert (await bob.recv())["data"] == str(n)  # read as we go: bob's socket keeps answering pings
        await timed(alice.join_group("room"))
    # nothing more for bob: a marker sent to him now is the next thing he gets
    await on_hub(server, hub_name, "send_to_connection", bob.connection_id, "marker", content_type="text/plain")
    assert await bob.recv() == {"type": "message", "from": "server", "dataType": "text", "data": "marker"}

    limit = driver.ack_timeout / 2 if driver.ack_timeout else float("inf")
    waited = [d for d in durations if d > limit]
    prompt = [d for d in durations if d <= limit]
    calls = (f"{len(waited)}/200 calls waited out the {driver.ack_timeout:.0f} s ack timeout; the others"
             if driver.ack_timeout else "200 calls")
    print(f"\nS12 ({driver}, {protocol}): {calls} took median {statistics.median(prompt) * 1000:.2f} ms, "
          f"max {max(prompt) * 1000:.1f} ms")
