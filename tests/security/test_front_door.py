"""Issue 9, defects 3, 4 and 7: the HTTP front door against unauthenticated hub creation, slow and
greedy clients, and requests that only look like WebSocket upgrades."""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import os
import resource
import time
import uuid

import jwt
import pytest
import websockets

from fastpush.config import Config, EventHandlerSettings, HubSettings
from tests.conftest import ACCESS_KEY
from tests.events.upstream_server import Upstream
from tests.helpers import JSON_V1, client_token, client_url, connect
from tests.security.conftest import assert_still_serving, rss_bytes

pytestmark = pytest.mark.timeout(90)

KEY = base64.b64encode(b"0123456789abcdef").decode()  # a valid Sec-WebSocket-Key: 16 bytes
WAIT = 5.0  # how long a test waits for something that should happen at once (or after a short timeout)


# --- raw HTTP on a socket ----------------------------------------------------------------------
async def _open(server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _response(reader: asyncio.StreamReader, timeout: float = WAIT) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response: status, headers (lower-cased names) and body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout)
    return int(status_line.split()[1]), headers, body


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float = WAIT) -> bytes:
    """Read until the server closes the connection; fails if it is still open after `timeout`."""
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), max(deadline - time.monotonic(), 0.01))
            if not chunk:
                return received
            received += chunk
    except ConnectionResetError:
        return received
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {timeout} s") from None


def _request(target: str, *headers: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]).encode()


def _upgrade(target: str, *, method: str = "GET", version: str | None = "13", key: str | None = KEY) -> bytes:
    headers = ["Connection: Upgrade", "Upgrade: websocket"]
    if version is not None:
        headers.append(f"Sec-WebSocket-Version: {version}")
    if key is not None:
        headers.append(f"Sec-WebSocket-Key: {key}")
    return _request(target, *headers, method=method)


async def _eventually(check, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _hub_of(server, name: str):
    return server.acall(server.server.node.find, name)


def _hub_names(server) -> set[str]:
    return set(server.call(lambda: [h.name for h in server.server.node.hubs()]))


def _rest(server, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    target = f"{path}?api-version=2024-12-01"
    token = jwt.encode({"aud": server.endpoint + target, "exp": int(time.time()) + 60},
                       server.access_key.encode(), algorithm="HS256")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, target, body=body, headers={"Authorization": f"Bearer {token}",
                                                          "Content-Type": "text/plain"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- defect 3: hubs made before authentication, and never freed -----------------------------
async def test_unauthenticated_requests_create_no_hubs(make_server):
    server = make_server()
    before = _hub_names(server)
    rss_before = rss_bytes(os.getpid())
    tag = uuid.uuid4().hex[:8]
    # Pipelined "upgrades" that are not ones (no Connection: Upgrade), no token: all refused at once.
    reader, writer = await _open(server)
    for batch in range(20):
        writer.write(b"".join(_request(f"/client/hubs/p{tag}{batch * 1000 + i}", "Upgrade: websocket",
                                       f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13")
                              for i in range(1000)))
        for _ in range(1000):
            status, _, _ = await _response(reader)
            assert status in (400, 401)
    writer.close()
    # Real upgrades without a token (401), and recoveries of sessions that do not exist.
    for i in range(20):
        for target in (f"/client/hubs/u{tag}{i}",
                       f"/client/hubs/r{tag}{i}?awps_connection_id=x&awps_reconnection_token=y"):
            reader, writer = await _open(server)
            writer.write(_upgrade(target))
            status, _, _ = await _response(reader)
            assert status in (401, 101)  # a recovery is upgraded, then closed 1008
            writer.close()
    assert _hub_names(server) == before
    for name in (f"p{tag}0", f"u{tag}0", f"r{tag}0"):
        assert await _hub_of(server, name) is None
    assert rss_bytes(os.getpid()) - rss_before < 6 * 1024 * 1024  # 20000 hubs took 12 MiB before the fix
    await assert_still_serving(server)


async def test_hub_is_dropped_when_its_last_client_leaves(make_server):
    server = make_server()
    hub = "left_" + uuid.uuid4().hex[:8]
    client = await connect(server, hub, JSON_V1)
    assert await _hub_of(server, hub) is not None
    await client.close()

    async def gone():
        return await _hub_of(server, hub) is None
    await _eventually(gone)
    await assert_still_serving(server)


async def test_rest_calls_for_unknown_hubs_create_nothing_but_user_groups_survive(make_server):
    server = make_server()
    tag = uuid.uuid4().hex[:8]
    assert (await asyncio.to_thread(_rest, server, "POST", f"/api/hubs/send{tag}/:send", b"hi"))[0] == 202
    assert (await asyncio.to_thread(_rest, server, "HEAD", f"/api/hubs/ask{tag}/groups/g/exists"))[0] == 404
    assert await _hub_of(server, f"send{tag}") is None and await _hub_of(server, f"ask{tag}") is None

    # A user->group record for a user with no connection is state: its next connection joins the group.
    hub = f"users{tag}"
    assert (await asyncio.to_thread(_rest, server, "PUT", f"/api/hubs/{hub}/users/ann/groups/room"))[0] == 200
    client = await connect(server, hub, JSON_V1, user_id="ann")
    await client.close()
    await _eventually(lambda: server.acall(lambda: server.server.node.find(hub).connection_count == 0))
    again = await connect(server, hub, JSON_V1, user_id="ann")
    assert (await asyncio.to_thread(_rest, server, "POST", f"/api/hubs/{hub}/groups/room/:send", b"to room"))[0] == 202
    assert (await again.recv())["data"] == "to room"
    await again.close()

    # Once the record is removed and nobody is connected, the hub holds nothing and is dropped.
    assert (await asyncio.to_thread(_rest, server, "DELETE", f"/api/hubs/{hub}/users/ann/groups/room"))[0] == 204

    async def gone():
        return await _hub_of(server, hub) is None
    await _eventually(gone)
    await assert_still_serving(server)


# --- defect 4: slow requests and too many connections ----------------------------------------
async def test_half_a_request_head_is_closed_after_the_head_timeout(make_server):
    server = make_server(request_head_timeout_seconds=0.5)
    reader, writer = await _open(server)
    writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half")
    assert await _closed_by_server(reader) == b""  # a TCP close, no answer
    silent, quiet = await _open(server)  # a connection that never sends anything at all
    assert await _closed_by_server(silent) == b""
    writer.close()
    quiet.close()
    await assert_still_serving(server)


async def test_a_head_trickled_byte_by_byte_is_cut_off(make_server):
    server = make_server(request_head_timeout_seconds=0.5)
    reader, writer = await _open(server)
    head = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 10000

    async def trickle():
        for byte in head:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
    trickling = asyncio.create_task(trickle())
    try:
        await _closed_by_server(reader)
    finally:
        trickling.cancel()
    await assert_still_serving(server)


async def test_a_body_that_stops_coming_gets_408(make_server):
    server = make_server(request_body_timeout_seconds=0.5)
    reader, writer = await _open(server)
    writer.write(_request("/api/hubs/h/:send?api-version=2024-12-01", "Content-Type: text/plain",
                          "Content-Length: 100", method="POST") + b"only part of it")
    status, headers, body = await _response(reader)
    assert status == 408 and headers.get("connection") == "close"
    assert json.loads(body)["code"] == "RequestTimeout"
    await _closed_by_server(reader)
    await assert_still_serving(server)


async def test_an_idle_keep_alive_connection_is_closed(make_server):
    server = make_server(http_keepalive_timeout_seconds=0.5)
    reader, writer = await _open(server)
    writer.write(_request("/api/health"))
    assert (await _response(reader))[0] == 200
    await _closed_by_server(reader)
    await assert_still_serving(server)


async def _refused(server) -> dict:
    """A connection over a cap: answered 503 (JSON) before it even sent its request, then closed."""
    reader, writer = await _open(server)
    status, _, body = await _response(reader)
    assert status == 503
    await _closed_by_server(reader)
    writer.close()
    return json.loads(body)


async def test_connections_per_address_are_capped_websockets_included(make_server, caplog):
    caplog.set_level(logging.WARNING, logger="fastpush.http")
    server = make_server(max_connections_per_ip=3)
    hub = "capped_" + uuid.uuid4().hex[:8]
    first = await connect(server, hub, JSON_V1)
    second = await websockets.connect(client_url(server, hub))
    reader, writer = await _open(server)  # an idle keep-alive HTTP connection
    writer.write(_request("/api/health"))
    assert (await _response(reader))[0] == 200

    for _ in range(3):
        assert (await _refused(server))["code"] == "ServiceUnavailable"
    refusals = [r for r in caplog.records if "refusing a connection from 127.0.0.1" in r.getMessage()]
    assert len(refusals) == 1  # logged once per address per minute

    await second.close()  # a WebSocket gives its place back when it closes
    await _eventually(lambda: server.acall(lambda: server.server.connection_limits.open_from("127.0.0.1") == 2))
    writer.close()
    await first.close()
    await _eventually(lambda: server.acall(lambda: server.server.connection_limits.open_from("127.0.0.1") == 0))
    await assert_still_serving(server)


async def test_total_connections_are_capped(make_server):
    server = make_server(max_connections=2)
    held = [await _open(server) for _ in range(2)]
    for reader, writer in held:
        writer.write(_request("/api/health"))
        assert (await _response(reader))[0] == 200
    assert "limit of 2 connections" in (await _refused(server))["message"]
    for _, writer in held:
        writer.close()
    await _eventually(lambda: server.acall(lambda: server.server.connection_limits.total == 0))
    await assert_still_serving(server)


async def test_max_connections_defaults_to_what_the_open_file_limit_leaves(make_server):
    server = make_server(max_upstream_connections=64)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = server.call(lambda: server.server.connection_limits.max_total)
    assert soft // 2 <= cap <= soft - 64  # room kept for the upstream pool, Redis and files


# --- defect 7: requests that are not proper upgrades ------------------------------------------
@pytest.fixture
def upstream():
    up = Upstream([ACCESS_KEY])
    yield up
    up.close()


@pytest.fixture
def evented_server(make_server, upstream):
    """A server whose hub `chat` sends every system event, `connect` included, to `upstream`."""
    handler = EventHandlerSettings(upstream.url_template(), user_event_pattern="*",
                                   system_events=["connect", "connected", "disconnected"])
    return make_server(config=Config(hubs={"chat": HubSettings(event_handlers=[handler])}))


def _chat_target(server) -> str:
    return f"/client/hubs/chat?access_token={client_token(server.access_key, server.endpoint, 'chat', user_id='u')}"


async def test_upgrade_header_without_connection_upgrade_is_400_at_once(evented_server, upstream):
    server = evented_server
    reader, writer = await _open(server)
    writer.write(_request(_chat_target(server), "Upgrade: websocket", f"Sec-WebSocket-Key: {KEY}",
                          "Sec-WebSocket-Version: 13") + _request("/api/health"))
    status, _, body = await _response(reader)
    assert status == 400 and json.loads(body)["code"] == "BadRequest"
    assert (await _response(reader))[0] == 200  # the pipelined request behind it is answered
    writer.close()
    assert upstream.events("connect") == []
    await assert_still_serving(server)


@pytest.mark.parametrize("method, version, key, status", [
    ("GET", "8", KEY, 426),
    ("GET", None, KEY, 426),
    ("POST", "13", KEY, 400),
    ("GET", "13", None, 400),
    ("GET", "13", "not base64!", 400),
    ("GET", "13", base64.b64encode(b"fifteen bytes..").decode(), 400),
])
async def test_bad_upgrades_are_refused_before_any_event(evented_server, upstream, method, version, key, status):
    server = evented_server
    reader, writer = await _open(server)
    writer.write(_upgrade(_chat_target(server), method=method, version=version, key=key))
    got, headers, body = await _response(reader)
    assert got == status and json.loads(body)["message"]
    if status == 426:
        assert headers["sec-websocket-version"] == "13"
    await _closed_by_server(reader)
    assert upstream.events("connect") == []
    assert await _hub_of(server, "chat") is None  # nothing was made for the refused client
    await assert_still_serving(server)
