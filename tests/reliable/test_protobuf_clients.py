"""Clients speaking protobuf.webpubsub.azure.v1 / protobuf.reliable.webpubsub.azure.v1 on real sockets,
decoded with Google's protobuf runtime, mixed with JSON and raw clients."""
from __future__ import annotations

import asyncio

import pytest
import websockets

import fastpush
from tests.helpers import JSON_V1, ServerView, client_url, connect
from tests.webpubsub_proto import Downstream, Upstream

PB = "protobuf.webpubsub.azure.v1"
PB_RELIABLE = "protobuf.reliable.webpubsub.azure.v1"
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


@pytest.fixture
async def server():
    async with fastpush.Server(port=0) as srv:
        yield srv


async def _recv(ws) -> Downstream:
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(frame, bytes)
    return Downstream.FromString(frame)


async def _pb_client(server, subprotocol, url=None, **claims):
    ws = await websockets.connect(url or client_url(ServerView.of(server), "h", **claims), subprotocols=[subprotocol])
    hello = await _recv(ws)
    return ws, hello.system_message.connected_message


async def test_protobuf_round_trip_with_json_and_raw_members(server):
    ws, hello = await _pb_client(server, PB_RELIABLE, user_id="pb", roles=ROLES)
    assert hello.connection_id and hello.user_id == "pb" and hello.reconnection_token
    js = await connect(ServerView.of(server), "h", JSON_V1, groups=["g"])
    raw = await connect(ServerView.of(server), "h", groups=["g"])

    await server.hub("h").send_to_all("hello", content_type="text/plain")
    message = (await _recv(ws)).data_message
    assert (getattr(message, "from"), message.data.text_data, message.sequence_id) == ("server", "hello", 1)
    assert (await js.recv())["data"] == "hello" and await raw.recv() == "hello"

    join = Upstream()
    join.join_group_message.group, join.join_group_message.ack_id = "g", 1
    await ws.send(join.SerializeToString())
    ack = (await _recv(ws)).ack_message
    assert (ack.ack_id, ack.success) == (1, True)

    send = Upstream()
    send.send_to_group_message.group = "g"
    send.send_to_group_message.ack_id = 2
    send.send_to_group_message.no_echo = True
    send.send_to_group_message.data.json_data = '{"price": 1.5}'
    await ws.send(send.SerializeToString())
    assert (await _recv(ws)).ack_message.success
    assert await js.recv() == {"type": "message", "from": "group", "group": "g", "fromUserId": "pb",
                               "dataType": "json", "data": {"price": 1.5}}
    assert await raw.recv() == '{"price": 1.5}'

    await server.hub("h").send_to_group("g", b"\x00\x01")
    binary = (await _recv(ws)).data_message
    assert (binary.group, binary.data.binary_data, binary.sequence_id) == ("g", b"\x00\x01", 2)
    await js.recv(), await raw.recv()

    ping = Upstream()
    ping.ping_message.SetInParent()
    await ws.send(ping.SerializeToString())
    assert (await _recv(ws)).HasField("pong_message")

    forbidden = Upstream()
    forbidden.join_group_message.group, forbidden.join_group_message.ack_id = " ", 3
    await ws.send(forbidden.SerializeToString())
    assert (await _recv(ws)).ack_message.error.name == "BadRequest"
    await ws.close()


async def test_plain_protobuf_has_no_sequence_ids(server):
    ws, hello = await _pb_client(server, PB)
    assert hello.reconnection_token == ""
    await server.hub("h").send_to_all({"a": 1})
    message = (await _recv(ws)).data_message
    assert message.data.text_data == '{"a":1}' and not message.HasField("sequence_id")
    await ws.close()


@pytest.mark.parametrize("frame,code", [("text", 1003), (b"\xff\xff\xff", 1007)])
async def test_bad_frames_close(server, frame, code):
    ws, _ = await _pb_client(server, PB)
    await ws.send(frame)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == code and closed.value.rcvd.reason


async def test_protobuf_reliable_recovery(server):
    ws, hello = await _pb_client(server, PB_RELIABLE)
    hub = server.hub("h")
    await hub.send_to_all("one", content_type="text/plain")
    assert (await _recv(ws)).data_message.sequence_id == 1
    ws.transport.abort()
    await asyncio.sleep(0.05)
    await hub.send_to_all("two", content_type="text/plain")
    url = client_url(ServerView.of(server), "h") + (f"&awps_connection_id={hello.connection_id}"
                                             f"&awps_reconnection_token={hello.reconnection_token}")
    ws2, hello2 = await _pb_client(server, PB_RELIABLE, url=url)
    assert hello2.connection_id == hello.connection_id
    resent = [(await _recv(ws2)).data_message for _ in range(2)]
    assert [(m.sequence_id, m.data.text_data) for m in resent] == [(1, "one"), (2, "two")]
    await ws2.close()
