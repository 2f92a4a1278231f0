"""Bad input gets a clear, documented answer, and the server keeps serving everyone else."""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import time

import jwt
import pytest
import websockets

from tests.helpers import JSON_V1, client_token, client_url, connect

API = "api-version=2024-12-01"


def rest_token(key: str, url: str, *, expires_in: int = 60) -> str:
    return jwt.encode({"aud": url, "exp": int(time.time()) + expires_in}, key.encode(), algorithm="HS256")


def call(server, method: str, target: str, body: bytes = b"", *, token: str | None = "sign",
         content_type: str | None = "text/plain", headers: dict | None = None):
    """One REST request; by default signed correctly for its URL. Returns (status, decoded JSON or None)."""
    all_headers = dict(headers or {})
    if token == "sign":
        token = rest_token(server.access_key, server.endpoint + target)
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if content_type is not None and body:
        all_headers["Content-Type"] = content_type
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, target, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


async def acall(*args, **kwargs):
    return await asyncio.to_thread(call, *args, **kwargs)


@pytest.fixture
async def bystander(server, hub_name):
    """A healthy client that must keep receiving whatever else goes wrong."""
    client = await connect(server, hub_name, JSON_V1)
    yield client
    await acall(server, "POST", f"/api/hubs/{hub_name}/:send?{API}", b"still here")
    assert (await client.recv())["data"] == "still here"
    await client.close()


# --- REST --------------------------------------------------------------------------------------

async def test_health(server):
    assert (await acall(server, "GET", "/api/health", token=None))[0] == 200
    assert (await acall(server, "HEAD", "/api/health", token=None))[0] == 200


@pytest.mark.parametrize("case", ["missing", "wrong-key", "expired", "wrong-audience", "alg-none", "garbage"])
async def test_rest_auth_failures_are_401(server, hub_name, bystander, case):
    target = f"/api/hubs/{hub_name}/:send?{API}"
    url = server.endpoint + target
    token = {
        "missing": None,
        "wrong-key": jwt.encode({"aud": url, "exp": int(time.time()) + 60}, b"another key", algorithm="HS256"),
        "expired": rest_token(server.access_key, url, expires_in=-3600),
        "wrong-audience": rest_token(server.access_key, server.endpoint + "/api/hubs/other/:send"),
        "alg-none": jwt.encode({"aud": url, "exp": int(time.time()) + 60}, None, algorithm="none"),
        "garbage": "not.a.jwt",
    }[case]
    status, body = await acall(server, "POST", target, b"x", token=token)
    assert status == 401
    assert body["code"] == "Unauthorized" and body["message"]


async def test_rest_token_audience_without_query_is_accepted(server, hub_name):
    target = f"/api/hubs/{hub_name}/:send?{API}"
    token = rest_token(server.access_key, server.endpoint + f"/api/hubs/{hub_name}/:send")
    assert (await acall(server, "POST", target, b"x", token=token))[0] == 202


async def test_secondary_key_is_accepted():
    from fastpush import Server
    async with Server("127.0.0.1", 0, access_key="primary-key", secondary_key="secondary-key") as srv:
        target = f"/api/hubs/h/:send?{API}"
        token = rest_token("secondary-key", srv.endpoint + target)
        assert (await acall(srv, "POST", target, b"x", token=token, ))[0] == 202

        class Other:  # the same server seen with the secondary key as "its" key
            endpoint, port, access_key = srv.endpoint, srv.port, "secondary-key"
        client = await connect(Other, "h", JSON_V1)
        await client.close()


@pytest.mark.parametrize("target,status", [
    ("/api/hubs/h/:explode", 404),
    ("/nowhere", 404),
    ("/api/hubs/h/groups/g/connections/c/extra", 404),
])
async def test_unknown_routes_are_404(server, target, status):
    got, body = await acall(server, "POST", target + "?" + API, b"x")
    assert got == status and body["code"] == "NotFound"


async def test_invalid_names_are_400(server):
    status, body = await acall(server, "POST", f"/api/hubs/1bad-hub/:send?{API}", b"x")
    assert status == 400 and "hub name" in body["message"]
    status, body = await acall(server, "POST", f"/api/hubs/h/groups/%20%20/:send?{API}", b"x")
    assert status == 400 and "group name" in body["message"]


async def test_invalid_json_body_is_400_with_parser_message(server, hub_name, bystander):
    status, body = await acall(server, "POST", f"/api/hubs/{hub_name}/:send?{API}", b'{"a": ',
                               content_type="application/json")
    assert status == 400 and "Invalid JSON" in body["message"]


async def test_invalid_filter_is_400(server, hub_name, bystander):
    status, body = await acall(server, "POST", f"/api/hubs/{hub_name}/:send?{API}&filter=userId%20eq", b"x")
    assert status == 400 and "filter" in body["message"].lower()


async def test_unsupported_content_type_is_415(server, hub_name):
    status, body = await acall(server, "POST", f"/api/hubs/{hub_name}/:send?{API}", b"<x/>",
                               content_type="application/xml")
    assert status == 415 and body["code"] == "UnsupportedMediaType"


async def test_bad_ttl_is_400(server, hub_name):
    status, _ = await acall(server, "POST", f"/api/hubs/{hub_name}/:send?{API}&messageTtlSeconds=301", b"x")
    assert status == 400


async def test_body_over_one_mib_is_413(server, hub_name, bystander):
    status, body = await acall(server, "POST", f"/api/hubs/{hub_name}/:send?{API}", b"x" * (1024 * 1024 + 1))
    assert status == 413 and body["code"] == "PayloadTooLarge"


async def test_exactly_one_mib_is_accepted(server, hub_name, bystander):
    status, _ = await acall(server, "POST", f"/api/hubs/{hub_name}/:send?{API}", b"x" * (1024 * 1024))
    assert status == 202
    assert len((await bystander.recv())["data"]) == 1024 * 1024


def _raw_http(server, data: bytes, read_until: bytes = b"", timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (
                not read_until or received.count(b"HTTP/1.1") < read_until.count(b"HTTP/1.1")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


async def test_keep_alive_and_pipelining(server):
    requests = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    received = await asyncio.to_thread(_raw_http, server, requests, b"HTTP/1.1" * 3)
    assert received.count(b"HTTP/1.1 200 OK") == 3


async def test_malformed_http_is_400(server, bystander):
    received = await asyncio.to_thread(_raw_http, server, b"NOT HTTP AT ALL\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 400")


# --- WebSocket handshake -----------------------------------------------------------------------

async def _handshake_status(url: str) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url)
    return refused.value.response.status_code


@pytest.mark.parametrize("case", ["missing", "expired", "other-hub", "wrong-key", "alg-none"])
async def test_bad_client_tokens_are_401(server, hub_name, bystander, case):
    base = "ws" + server.endpoint[4:] + f"/client/hubs/{hub_name}"
    aud = f"{server.endpoint}/client/hubs/{hub_name}"
    token = {
        "missing": None,
        "expired": client_token(server.access_key, server.endpoint, hub_name, expires_in=-3600),
        "other-hub": client_token(server.access_key, server.endpoint, "otherHub"),
        "wrong-key": jwt.encode({"aud": aud, "exp": int(time.time()) + 60}, b"wrong", algorithm="HS256"),
        "alg-none": jwt.encode({"aud": aud, "exp": int(time.time()) + 60}, None, algorithm="none"),
    }[case]
    url = base if token is None else f"{base}?access_token={token}"
    assert await _handshake_status(url) == 401


async def test_token_in_authorization_header(server, hub_name):
    token = client_token(server.access_key, server.endpoint, hub_name, user_id="hdr")
    ws = await websockets.connect("ws" + server.endpoint[4:] + f"/client/hubs/{hub_name}",
                                  additional_headers={"Authorization": f"Bearer {token}"}, subprotocols=[JSON_V1])
    assert json.loads(await ws.recv())["userId"] == "hdr"
    await ws.close()


async def test_client_audience_is_case_insensitive(server, hub_name):
    """The Python SDK lower-cases the endpoint in `aud`; the hub keeps its case."""
    token = client_token(server.access_key, server.endpoint.upper().replace("HTTP", "http"), hub_name)
    ws = await websockets.connect("ws" + server.endpoint[4:] + f"/client/hubs/{hub_name}?access_token={token}")
    await ws.close()


async def test_invalid_hub_in_client_path_is_400(server):
    assert await _handshake_status("ws" + server.endpoint[4:] + "/client/hubs/9nine") == 400


async def test_unknown_websocket_path_is_404(server):
    assert await _handshake_status("ws" + server.endpoint[4:] + "/elsewhere") == 404


async def test_string_role_and_group_claims(server, hub_name):
    client = await connect(server, hub_name, JSON_V1, roles="webpubsub.sendToGroup", groups="solo")
    ack = await client.request({"type": "sendToGroup", "group": "solo", "dataType": "text", "data": "hi"})
    assert ack["success"] is True
    assert (await client.recv())["data"] == "hi"


# --- client frames -----------------------------------------------------------------------------

async def _close_of(client) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(client.ws.recv(), 5)
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_binary_frame_on_json_protocol_closes_1003(server, hub_name, bystander):
    client = await connect(server, hub_name, JSON_V1)
    await client.ws.send(b"\x01\x02")
    code, reason = await _close_of(client)
    assert code == 1003 and "Binary" in reason


@pytest.mark.parametrize("frame", ['{"type": ', "[1, 2]", '{"no": "type"}', '{"type": "warp"}', '{"type": "joinGroup"}',
                                   '{"type": "sendToGroup", "group": "g", "dataType": "binary", "data": "!!"}'])
async def test_malformed_frames_close_1007(server, hub_name, bystander, frame):
    client = await connect(server, hub_name, JSON_V1)
    await client.ws.send(frame)
    code, reason = await _close_of(client)
    assert code == 1007 and reason


async def test_invalid_requests_with_ack_id_get_error_acks(server, hub_name, bystander):
    client = await connect(server, hub_name, JSON_V1, roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
    assert (await client.request({"type": "warp"}))["error"]["name"] == "BadRequest"
    assert (await client.request({"type": "joinGroup"}))["error"]["name"] == "BadRequest"
    assert (await client.request({"type": "joinGroup", "group": " "}))["error"]["name"] == "BadRequest"
    ack = await client.request({"type": "sendToGroup", "group": "g", "dataType": "colour", "data": "x"})
    assert ack["error"]["name"] == "BadRequest" and ack["error"]["message"]
    assert (await client.request({"type": "joinGroup", "group": "g"}))["success"] is True


async def test_forbidden_without_roles(server, hub_name):
    client = await connect(server, hub_name, JSON_V1, roles=["webpubsub.joinLeaveGroup.allowed"])
    assert (await client.request({"type": "joinGroup", "group": "allowed"}))["success"] is True
    denied = await client.request({"type": "joinGroup", "group": "denied"})
    assert denied["success"] is False and denied["error"]["name"] == "Forbidden" and denied["error"]["message"]
    sent = await client.request({"type": "sendToGroup", "group": "allowed", "data": {"a": 1}})
    assert sent["error"]["name"] == "Forbidden"


async def test_frame_over_limit_closes_1009(server, hub_name, bystander):
    client = await connect(server, hub_name, JSON_V1)
    try:
        await client.ws.send("x" * (1024 * 1024 + 1))
    except websockets.ConnectionClosed as closed:
        # The server may refuse the frame from its header and close before the client has written
        # all of it: the send itself then fails, carrying the server's close frame.
        assert closed.rcvd is not None
        code = closed.rcvd.code
    else:
        code, _ = await _close_of(client)
    assert code == 1009


async def test_raw_client_message_without_handler_closes_1011(server, hub_name, bystander):
    client = await connect(server, hub_name)
    await client.ws.send("hello?")
    code, reason = await _close_of(client)
    assert code == 1011 and "event handler" in reason


async def test_recovery_of_unknown_session_upgrades_then_closes_1008(server, hub_name):
    url = client_url(server, hub_name) + "&awps_connection_id=gone&awps_reconnection_token=stale"
    ws = await websockets.connect(url, subprotocols=["json.reliable.webpubsub.azure.v1"])
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd.code == 1008


async def test_ping_gets_pong(server, hub_name):
    client = await connect(server, hub_name, JSON_V1)
    await client.send({"type": "ping"})
    assert await client.recv() == {"type": "pong"}


async def test_vanished_client_is_forgotten(server, hub_name, bystander):
    client = await connect(server, hub_name, JSON_V1, user_id="ghost")
    client.ws.transport.abort()
    hub = server.server.hub(hub_name)
    for _ in range(100):
        if not await server.acall(hub.user_exists, "ghost"):
            break
        await asyncio.sleep(0.02)
    assert not await server.acall(hub.user_exists, "ghost")


async def test_fragmented_message_is_reassembled(server, hub_name):
    client = await connect(server, hub_name, JSON_V1, roles=["webpubsub.sendToGroup"], groups=["frag"])
    text = json.dumps({"type": "sendToGroup", "group": "frag", "dataType": "text", "data": "joined up", "ackId": 7})
    await client.ws.send([text[:10], text[10:25], text[25:]])
    replies = [await client.recv(), await client.recv()]
    assert {"type": "ack", "ackId": 7, "success": True} in replies
    assert any(r.get("data") == "joined up" for r in replies)


async def test_binary_payload_base64_roundtrip(server, hub_name):
    client = await connect(server, hub_name, JSON_V1, roles=["webpubsub.sendToGroup"], groups=["bin"])
    raw = await connect(server, hub_name, groups=["bin"])
    data = base64.b64encode(bytes(range(256))).decode()
    await client.send({"type": "sendToGroup", "group": "bin", "dataType": "binary", "data": data})
    assert (await client.recv())["data"] == data
    assert await raw.recv() == bytes(range(256))
