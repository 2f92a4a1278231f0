"""Issue 9, defect 8 (codec parts): numbers out of range and deeply nested JSON are client
mistakes, answered with close 1007 (WebSocket) or 400 (REST) and never logged as server errors."""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time

import jwt
import pytest
import websockets

from fastpush.protocol.payload import MAX_JSON_DEPTH
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, client_url, connect
from tests.security.conftest import assert_still_serving

pytestmark = pytest.mark.timeout(60)

PROTOBUF_V1 = "protobuf.webpubsub.azure.v1"
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.fixture
def no_server_errors(caplog):
    """Fail the test if anything was logged at ERROR (a traceback for a client mistake)."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def _close_of(ws) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None, "the server dropped the connection without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def _rest_send(server, hub: str, body: bytes, content_type: str) -> tuple[int, dict | None]:
    target = f"/api/hubs/{hub}/:send?api-version=2024-12-01"
    token = jwt.encode({"aud": server.endpoint + target, "exp": int(time.time()) + 60},
                       server.access_key.encode(), algorithm="HS256")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", target, body=body,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": content_type})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
@pytest.mark.parametrize("sequence_id", [2**64, 2**200, -1])
async def test_sequence_ack_outside_uint64_closes_1007(server, hub_name, no_server_errors, subprotocol, sequence_id):
    client = await connect(server, hub_name, subprotocol)
    await client.ws.send(json.dumps({"type": "sequenceAck", "sequenceId": sequence_id}))
    code, reason = await _close_of(client.ws)
    assert code == 1007 and "sequenceId" in reason
    await assert_still_serving(server)


async def test_sequence_ack_at_uint64_max_is_accepted(server, hub_name, no_server_errors):
    client = await connect(server, hub_name, JSON_RELIABLE_V1)
    await client.send({"type": "sequenceAck", "sequenceId": 2**64 - 1})
    await client.send({"type": "ping"})
    assert await client.recv() == {"type": "pong"}
    await client.close()


async def test_protobuf_sequence_ack_beyond_uint64_closes_1007(server, hub_name, no_server_errors):
    # UpstreamMessage.sequence_ack_message (8) { sequence_id (1) = an 11-byte varint }
    inner = b"\x08" + b"\xff" * 10 + b"\x01"
    frame = bytes([8 << 3 | 2, len(inner)]) + inner
    ws = await websockets.connect(client_url(server, hub_name), subprotocols=[PROTOBUF_V1])
    await asyncio.wait_for(ws.recv(), 5)  # connected
    await ws.send(frame)
    code, reason = await _close_of(ws)
    assert code == 1007 and reason
    await assert_still_serving(server)


@pytest.mark.parametrize("depth", [10_000, MAX_JSON_DEPTH])
async def test_deeply_nested_json_frame_closes_1007(server, hub_name, no_server_errors, depth):
    """The frame's own object is one level, so data nested MAX_JSON_DEPTH deep is one too many."""
    client = await connect(server, hub_name, JSON_V1, roles=ROLES)
    await client.ws.send('{"type":"sendToGroup","group":"g","data":' + _nested(depth) + "}")
    code, reason = await _close_of(client.ws)
    assert code == 1007 and "nested" in reason
    await assert_still_serving(server)


async def test_json_at_the_depth_limit_is_delivered(server, hub_name, no_server_errors):
    client = await connect(server, hub_name, JSON_V1, roles=ROLES)
    assert (await client.request({"type": "joinGroup", "group": "g"}))["success"] is True
    data = json.loads(_nested(MAX_JSON_DEPTH - 1))
    assert (await client.request({"type": "sendToGroup", "group": "g", "data": data}))["success"] is True
    assert (await client.recv())["data"] == data
    await client.close()


async def test_deeply_nested_json_with_ack_id_gets_1007(server, hub_name, no_server_errors):
    client = await connect(server, hub_name, JSON_V1, roles=ROLES)
    await client.ws.send('{"type":"sendToGroup","group":"g","ackId":1,"data":' + _nested(10_000) + "}")
    code, reason = await _close_of(client.ws)
    assert code == 1007 and reason


@pytest.mark.parametrize("depth", [10_000, MAX_JSON_DEPTH + 1])
async def test_deeply_nested_rest_json_body_is_400(server, hub_name, no_server_errors, depth):
    listener = await connect(server, hub_name, JSON_V1)
    status, body = await asyncio.to_thread(_rest_send, server, hub_name, _nested(depth).encode(), "application/json")
    assert status == 400, body
    assert body["code"] and "nested" in body["message"]
    await listener.expect_silence()
    await listener.close()
    await assert_still_serving(server)


async def test_rest_json_body_at_the_depth_limit_is_sent(server, hub_name, no_server_errors):
    listener = await connect(server, hub_name, JSON_V1)
    body = _nested(MAX_JSON_DEPTH).encode()
    status, _ = await asyncio.to_thread(_rest_send, server, hub_name, body, "application/json")
    assert status == 202
    assert (await listener.recv())["data"] == json.loads(body)
    await listener.close()
