"""Message `metadata` on a client's sendToGroup and event, on real sockets: every subprotocol
receiver of a group message gets it (JSON, reliable JSON, protobuf and reliable protobuf, framed
once), a raw receiver gets the data alone as it always does; an event's metadata reaches the
upstream as `x-webpubsub-metadata-<key>` headers and an in-process handler in `payload.metadata`."""
from __future__ import annotations

import asyncio

import pytest
import websockets

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from tests.events.upstream_server import Upstream
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url, connect, eventually
from tests.webpubsub_proto import Downstream
from tests.webpubsub_proto import Upstream as UpstreamMessage

KEY = "metadata-test-access-key-0123456789abcdefghij"
PB, PB_RELIABLE = "protobuf.webpubsub.azure.v1", "protobuf.reliable.webpubsub.azure.v1"
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
METADATA = {"trace-id": "4bf92f3577b34da6", "Content-Language": "fr", "note": "déjà vu: ünïcode is fine"}


@pytest.fixture
def upstream():
    up = Upstream([KEY])
    yield up
    up.close()


@pytest.fixture
async def server(upstream):
    handler = EventHandlerSettings(upstream.url_template(), user_event_pattern="*")
    config = Config(hubs={"up": HubSettings(event_handlers=[handler])})
    async with fastpush.Server(port=0, access_key=KEY, config=config) as srv:
        yield srv


async def _pb(server, subprotocol: str) -> websockets.ClientConnection:
    ws = await websockets.connect(client_url(ServerView.of(server), "h", roles=ROLES, groups=["g"]),
                                  subprotocols=[subprotocol])
    await ws.recv()  # connected
    return ws


async def _pb_message(ws) -> Downstream:
    return Downstream.FromString(await asyncio.wait_for(ws.recv(), 5)).data_message


async def test_group_receivers_of_every_subprotocol_get_it(server):
    view = ServerView.of(server)
    sender = await connect(view, "h", JSON_V1, user_id="ann", roles=ROLES)
    plain = await connect(view, "h", JSON_V1, groups=["g"])
    reliable = await connect(view, "h", JSON_RELIABLE_V1, groups=["g"])
    raw = await connect(view, "h", groups=["g"])
    pb, pb_reliable = await _pb(server, PB), await _pb(server, PB_RELIABLE)

    ack = await sender.request({"type": "sendToGroup", "group": "g", "dataType": "json", "data": {"p": 1},
                                "metadata": METADATA})
    assert ack["success"]
    expected = {"type": "message", "from": "group", "group": "g", "fromUserId": "ann", "dataType": "json",
                "data": {"p": 1}, "metadata": METADATA}
    assert await plain.recv() == expected
    assert await reliable.recv() == {"sequenceId": 1, **expected}
    assert await raw.recv() == '{"p":1}'  # no envelope: the data alone, as for every raw receiver
    for ws, sequence_id in ((pb, 0), (pb_reliable, 1)):
        message = await _pb_message(ws)
        assert dict(message.metadata) == METADATA and message.data.text_data == '{"p":1}'
        assert message.sequence_id == sequence_id

    # without metadata the message is what it always was
    assert (await sender.request({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x"}))["success"]
    assert "metadata" not in await plain.recv()
    assert not (await _pb_message(pb)).metadata


async def test_a_protobuf_sender_metadata_reaches_json_receivers(server):
    plain = await connect(ServerView.of(server), "h", JSON_V1, groups=["g"])
    ws = await _pb(server, PB)
    send = UpstreamMessage()
    send.send_to_group_message.group = "g"
    send.send_to_group_message.data.text_data = "hi"
    send.send_to_group_message.metadata.update(METADATA)
    await ws.send(send.SerializeToString())
    message = await plain.recv()
    assert message["data"] == "hi" and message["metadata"] == METADATA
    assert dict((await _pb_message(ws)).metadata) == METADATA  # the sender is a member too


async def test_event_metadata_reaches_the_upstream_as_headers(server, upstream):
    client = await connect(ServerView.of(server), "up", JSON_V1)
    ack = await client.request({"type": "event", "event": "chat", "dataType": "text", "data": "hello",
                                "metadata": {"trace-id": "abc", "Tenant": "t-1"}})
    assert ack["success"]
    (event,) = upstream.events("chat")
    assert event.headers["x-webpubsub-metadata-trace-id"] == "abc"
    assert event.headers["x-webpubsub-metadata-tenant"] == "t-1"
    assert event.body == b"hello"


async def test_an_in_process_handler_reads_it_from_the_payload():
    seen: list = []
    async with fastpush.Server(port=0) as server:
        server.hub("cb").handle_events(on_event=lambda ctx, name, payload: seen.append(payload.metadata))
        client = await connect(ServerView.of(server), "cb", JSON_V1)
        await client.send({"type": "event", "event": "e", "dataType": "json", "data": 1, "metadata": {"k": "v"}})
        assert await eventually(lambda: seen)
        assert seen == [(("k", "v"),)]
        pb_send = UpstreamMessage()
        pb_send.event_message.event = "e"
        pb_send.event_message.data.text_data = "x"
        pb_send.event_message.metadata["from"] = "protobuf"
        ws = await websockets.connect(client_url(ServerView.of(server), "cb"), subprotocols=[PB])
        await ws.recv()
        await ws.send(pb_send.SerializeToString())
        assert await eventually(lambda: len(seen) == 2)
        assert seen[1] == (("from", "protobuf"),)
        await ws.close()


async def test_it_survives_a_move_through_redis(cluster, hub_name):
    """With Redis, the send goes between nodes as an operation: the metadata goes with it."""
    a, b = cluster[0], cluster[1]
    receiver = await connect(b, hub_name, JSON_V1, roles=ROLES)
    assert (await receiver.request({"type": "joinGroup", "group": "g"}))["success"]  # acked once subscribed
    sender = await connect(a, hub_name, JSON_V1, roles=ROLES)
    assert (await sender.request({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x",
                                  "metadata": {"k": "v"}}))["success"]
    assert (await receiver.recv())["metadata"] == {"k": "v"}
