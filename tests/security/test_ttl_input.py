"""Hostile message TTLs: REST messageTtlSeconds and a client's ttlSeconds outside 0-300, in every
spelling a parser might trip on, get the documented refusal (400; a BadRequest ack, or 1007
without an ackId), never a 500 or a dropped connection, and the server goes on serving."""
from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import quote

import pytest
import websockets

from fastpush.protocol.json_protocol import ProtocolViolation, parse_request
from tests.helpers import JSON_V1, client_url, connect
from tests.security.conftest import assert_still_serving
from tests.server.test_bad_input import API, acall
from tests.webpubsub_proto import Downstream, Upstream

SEND_ANY = "webpubsub.sendToGroup"
ROUTES = [":send", "groups/g/:send", "users/u/:send", "connections/c/:send"]
BAD_TTLS = ["-1", "301", "1e2", "0x10", "+5", " 5", "5 ", "1.0", "", "NaN", "\u00b2", "\u0663", "\uff15", "5\x00",
            "1" * 5000, "9" * 11]


@pytest.mark.parametrize("route", ROUTES)
async def test_every_send_refuses_a_bad_message_ttl_with_400(server, route):
    hub = "ttl_" + uuid.uuid4().hex[:8]
    for ttl in BAD_TTLS:
        status, body = await acall(server, "POST", f"/api/hubs/{hub}/{route}?{API}&messageTtlSeconds={quote(ttl)}",
                                   b"x")
        assert status == 400, (ttl[:20], status, body)
        assert body["code"] == "BadRequest" and "messageTtlSeconds must be an integer from 0 to 300" in body["message"]
        assert len(body["message"]) < 200  # the value is not echoed in full
    for ttl in ("0", "300", "0007"):
        status, _ = await acall(server, "POST", f"/api/hubs/{hub}/{route}?{API}&messageTtlSeconds={ttl}", b"x")
        assert status == 202
    await assert_still_serving(server)


@pytest.mark.parametrize("ttl", [-1, 301, 2**63, 1.5, "5", True, [], {}])
async def test_a_client_send_with_a_bad_ttl_seconds_is_refused(server, ttl):
    hub = "ttl_" + uuid.uuid4().hex[:8]
    client = await connect(server, hub, JSON_V1, roles=[SEND_ANY])
    message = {"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x", "ttlSeconds": ttl}
    ack = await client.request(message)
    assert ack["success"] is False and ack["error"]["name"] == "BadRequest"
    assert "ttlSeconds must be an integer from 0 to 300" in ack["error"]["message"]
    await client.send(message)  # the same without an ackId: a malformed message
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd.code == 1007
    await assert_still_serving(server)


@pytest.mark.parametrize("ack_id", [None, 3])
async def test_a_protobuf_send_with_a_ttl_past_300_is_refused(server, ack_id):
    hub = "ttl_" + uuid.uuid4().hex[:8]
    ws = await websockets.connect(client_url(server, hub, roles=[SEND_ANY]),
                                  subprotocols=["protobuf.webpubsub.azure.v1"])
    Downstream.FromString(await ws.recv())  # connected
    send = Upstream()
    send.send_to_group_message.group = "g"
    send.send_to_group_message.data.text_data = "x"
    send.send_to_group_message.ttl_seconds = 2**32 - 1
    if ack_id is not None:
        send.send_to_group_message.ack_id = ack_id
    await ws.send(send.SerializeToString())
    if ack_id is None:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1007
    else:
        ack = Downstream.FromString(await asyncio.wait_for(ws.recv(), 5)).ack_message
        assert (ack.ack_id, ack.success, ack.error.name) == (3, False, "BadRequest")
        await ws.close()
    await assert_still_serving(server)


async def test_the_embedding_api_refuses_a_bad_ttl(server):
    hub = server.server.hub("ttl_" + uuid.uuid4().hex[:8])
    for ttl in (-1, 301, True, 1.5):
        with pytest.raises(ValueError, match="message_ttl_seconds must be an integer from 0 to 300"):
            await server.acall(lambda ttl=ttl: hub.send_to_all("x", content_type="text/plain",
                                                               message_ttl_seconds=ttl))


def test_a_json_value_too_big_for_any_integer_closes_1007():
    """msgspec refuses it while decoding: no ackId is read, so the message is malformed."""
    with pytest.raises(ProtocolViolation):
        parse_request(json.dumps({"type": "sendToGroup", "group": "g", "data": 1, "ackId": 1}).encode()[:-1]
                      + b',"ttlSeconds":' + b"9" * 5000 + b"}")
