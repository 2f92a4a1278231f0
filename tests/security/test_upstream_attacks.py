"""Attacks aimed through fastpush at the application server behind it (issue 9, defects 1 and 9):
header injection, request smuggling and path traversal through event names and user ids, and
replies from the upstream that must not reach clients as they are."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from tests.helpers import JSON_V1, ServerView, client_url, connect
from tests.security.conftest import assert_still_serving
from tests.security.upstream_probe import Reply, UpstreamProbe

KEY = "upstream-attack-access-key-0123456789abcdef"
HUB = "chat"


@pytest.fixture
async def probe():
    up = await UpstreamProbe().start()
    yield up
    await up.stop()


def _config(probe: UpstreamProbe, hub: str = HUB) -> Config:
    handler = EventHandlerSettings(probe.url_template(), user_event_pattern="*",
                                   system_events=["connect", "connected", "disconnected"])
    return Config(hubs={hub: HubSettings(event_handlers=[handler])}, upstream_timeout_seconds=2.0)


@pytest.fixture
async def server(probe):
    async with fastpush.Server(port=0, access_key=KEY, config=_config(probe), max_upstream_connections=4,
                               max_message_bytes=64 * 1024) as srv:
        yield srv


async def _eventually(predicate, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("event", [
    "evil\r\nce-userId: admin\r\nX-Injected: yes",
    "evil\r\n\r\nPOST /admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "../../../admin/delete?all=true#",
    "café",
    "1starts-with-a-digit",
    "x" * 129,
    "",
])
async def test_bad_event_names_are_refused_and_never_reach_the_upstream(server, probe, event):
    client = await connect(ServerView.of(server), HUB, JSON_V1)
    ack = await client.request({"type": "event", "event": event, "dataType": "text", "data": "hi"})
    assert ack["success"] is False and ack["error"]["name"] == "BadRequest", ack
    good = await client.request({"type": "event", "event": "ok.name-1_x", "dataType": "text", "data": "hi"})
    assert good["success"] is True, good
    await client.close()
    posts = probe.posts()
    assert [p.event for p in posts if p.event not in ("connect", "connected", "disconnected")] == ["ok.name-1_x"]
    assert b"X-Injected" not in probe.raw and b"/admin" not in probe.raw
    assert all(p.path.startswith(f"/up/{HUB}/") for p in probe.requests)
    assert all(p.header("ce-userId") is None for p in posts)


async def test_a_user_id_with_line_breaks_injects_nothing(server, probe):
    url = client_url(ServerView.of(server), HUB, user_id="mallory\r\nX-Injected: yes")
    with pytest.raises(Exception) as refused:
        await connect(ServerView.of(server), HUB, JSON_V1, url=url)
    assert "401" in str(refused.value)
    assert b"X-Injected" not in probe.raw and b"mallory" not in probe.raw
    await assert_still_serving(ServerView.of(server))


async def test_non_ascii_user_ids_reach_the_upstream_as_utf8(server, probe):
    for user in ("张三", "café"):
        client = await connect(ServerView.of(server), HUB, JSON_V1, user_id=user)
        assert client.user_id == user
        ack = await client.request({"type": "event", "event": "hello", "dataType": "text", "data": "hi"})
        assert ack["success"] is True, ack
        await client.close()
        hello = probe.posts("hello")[-1]
        assert hello.header("ce-userId") == user.encode()
        assert probe.posts("connect")[-1].header("ce-userId") == user.encode()


async def test_a_connect_handler_answer_with_a_bad_user_id_refuses_the_client(server, probe):
    probe.replies["connect"] = Reply(200, json.dumps({"userId": "x\r\nX-Injected: yes"}).encode(), "application/json")
    with pytest.raises(Exception) as refused:
        await connect(ServerView.of(server), HUB, JSON_V1)
    assert "500" in str(refused.value)
    assert b"X-Injected" not in probe.raw


async def test_hub_names_are_percent_encoded_into_the_url(probe):
    hub = "Room[1]`x"
    async with fastpush.Server(port=0, access_key=KEY, config=_config(probe, hub)) as srv:
        client = await connect(ServerView.of(srv), hub, JSON_V1)
        await client.close()
    assert probe.posts("connect")[0].path == "/up/Room%5B1%5D%60x/connect"


async def test_invalid_utf8_text_reply_is_an_error_ack_and_logged(server, probe, caplog):
    probe.replies["echo"] = Reply(200, b"bad \xff\xfe bytes", "text/plain")
    client = await connect(ServerView.of(server), HUB, JSON_V1)
    with caplog.at_level(logging.WARNING, logger="fastpush"):
        ack = await client.request({"type": "event", "event": "echo", "dataType": "text", "data": "hi"})
    assert ack["success"] is False and ack["error"]["name"] == "InternalServerError", ack
    assert any("UTF-8" in r.getMessage() for r in caplog.records)
    await client.expect_silence()
    await client.close()


async def test_a_reply_over_the_message_limit_is_not_forwarded(server, probe):
    probe.replies["big"] = Reply(200, b"x" * (64 * 1024 + 1), "text/plain")
    probe.replies["small"] = Reply(200, b"y" * (64 * 1024), "text/plain")
    client = await connect(ServerView.of(server), HUB, JSON_V1)
    ack = await client.request({"type": "event", "event": "big", "dataType": "text", "data": "hi"})
    assert ack["success"] is False and ack["error"]["name"] == "InternalServerError", ack
    ack = await client.request({"type": "event", "event": "small", "dataType": "text", "data": "hi"})
    assert ack["success"] is True, ack
    reply = client._pending.pop(0)
    assert reply["data"] == "y" * (64 * 1024)
    await client.close()


async def test_upstream_sockets_are_bounded_and_every_event_is_answered(server, probe):
    probe.replies["slow"] = Reply(200, b"done", "text/plain", delay=0.2)
    clients = [await connect(ServerView.of(server), HUB, JSON_V1) for _ in range(12)]
    acks = await asyncio.gather(*(c.request({"type": "event", "event": "slow", "dataType": "text", "data": "x"})
                                  for c in clients))
    assert all(a["success"] for a in acks), acks
    assert probe.most_open_connections <= 4, probe.most_open_connections
    assert len(probe.posts("slow")) == 12
    for c in clients:
        await c.close()


async def test_a_flood_of_events_is_held_back_by_tcp_not_by_memory(server, probe):
    """20,000 events (1.4 MB, which the kernel's buffers take at once) against an upstream that
    needs 0.2 s for each: the server stops reading the client once MAX_EVENTS_IN_FLIGHT wait, so
    what it holds stays bounded by one read's worth of frames."""
    from fastpush.session import MAX_EVENTS_IN_FLIGHT
    probe.replies["flood"] = Reply(204, delay=0.2)
    client = await connect(ServerView.of(server), HUB, JSON_V1)
    frame = json.dumps({"type": "event", "event": "flood", "dataType": "text", "data": "x"})
    sends = (client.ws.send(frame) for _ in range(20_000))
    sender = asyncio.ensure_future(asyncio.gather(*sends))
    hub = server.node.hub(HUB)
    conn = next(iter(hub.tables.connections.values()))
    await _eventually(lambda: conn._events_in_flight >= MAX_EVENTS_IN_FLIGHT)
    await asyncio.sleep(0.5)  # the client keeps pushing: the server must not keep reading
    assert conn._events_in_flight < 20_000 // 2, conn._events_in_flight  # read on, it would hold all
    await assert_still_serving(ServerView.of(server))
    sender.cancel()
    client.ws.transport.abort()


async def test_an_endless_reply_head_is_an_error_not_memory(server, probe):
    """200 KB of headers (the limit is 64 KiB) make the event fail, as an unreadable answer."""
    probe.replies["heads"] = Reply(200, b"ok", "text/plain",
                                   extra_head=b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(200)))
    client = await connect(ServerView.of(server), HUB, JSON_V1)
    ack = await client.request({"type": "event", "event": "heads", "dataType": "text", "data": "hi"})
    assert ack["success"] is False and ack["error"]["name"] == "InternalServerError", ack
    await client.close()
