"""Events to an HTTP application server, CloudEvents as Azure Web PubSub sends them."""
from __future__ import annotations

import asyncio
import base64
import json

import pytest
import websockets

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from tests.events.upstream_server import Answer, Upstream
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url, connect

PRIMARY, SECONDARY = "primary-access-key-for-event-tests-0123456789", "secondary-access-key-for-event-tests-012345"


@pytest.fixture
def upstream():
    up = Upstream([PRIMARY, SECONDARY])
    yield up
    up.close()


def _config(upstream: Upstream, timeout: float = 2.0, **hub) -> Config:
    handler = EventHandlerSettings(upstream.url_template(), user_event_pattern="*",
                                   system_events=["connect", "connected", "disconnected"])
    return Config(hubs={"chat": HubSettings(event_handlers=[handler], **hub)}, upstream_timeout_seconds=timeout)


@pytest.fixture
async def server(upstream):
    async with fastpush.Server(port=0, access_key=PRIMARY, secondary_key=SECONDARY, config=_config(upstream)) as srv:
        yield srv


async def _eventually(predicate, seconds: float = 5.0):
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    assert predicate()


async def test_connect_sets_identity_then_connected_and_disconnected(server, upstream):
    upstream.answers["connect"] = Answer(200, json.dumps({"userId": "alice", "groups": ["room"],
                                                          "roles": ["webpubsub.sendToGroup.room"]}).encode(),
                                         "application/json", {"ce-connectionState": "c3RhdGU="})
    url = client_url(ServerView.of(server), "chat", user_id="token-user", tenant="t1") + "&lang=en"
    client = await connect(ServerView.of(server), "chat", JSON_V1, url=url)
    assert client.user_id == "alice"

    validation = upstream.requests[0]
    assert validation.method == "OPTIONS" and validation.path == "/upstream/chat/validate"
    assert validation.headers["webhook-request-origin"] == "127.0.0.1"
    (connect_event,) = upstream.events("connect")
    headers = connect_event.headers
    assert headers["ce-type"] == "azure.webpubsub.sys.connect" and headers["ce-awpsversion"] == "1.0"
    assert headers["ce-specversion"] == "1.0" and headers["ce-hub"] == "chat" and headers["ce-id"] == "0"
    assert headers["ce-source"] == f"/hubs/chat/client/{client.connection_id}"
    assert headers["ce-userid"] == "token-user" and headers["ce-subprotocol"] == JSON_V1
    assert connect_event.path == "/upstream/chat/connect"
    body = json.loads(connect_event.body)
    assert body["claims"]["sub"] == ["token-user"] and body["claims"]["tenant"] == ["t1"]
    assert body["query"] == {"lang": ["en"]} and body["subprotocols"] == [JSON_V1]
    assert "authorization" not in body["headers"] and body["headers"]["upgrade"] == ["websocket"]

    assert (await client.request({"type": "sendToGroup", "group": "room", "dataType": "text", "data": "hi"}))["success"]
    assert (await client.recv())["data"] == "hi"  # joined `room` and may send there: both from connect
    await _eventually(lambda: upstream.events("connected"))
    assert upstream.events("connected")[0].headers["ce-userid"] == "alice"
    await client.close()
    await _eventually(lambda: upstream.events("disconnected"))
    disconnected = upstream.events("disconnected")[0]
    assert "reason" in json.loads(disconnected.body)
    assert disconnected.headers["ce-connectionstate"] == "c3RhdGU="
    assert upstream.bad_signatures == []


@pytest.mark.parametrize("status", [401, 403, 500])
async def test_connect_rejection_fails_the_handshake(server, upstream, status):
    upstream.answers["connect"] = Answer(status, b"no entry", "text/plain")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(client_url(ServerView.of(server), "chat"))
    assert refused.value.response.status_code == status
    await asyncio.sleep(0.1)
    assert upstream.events("connected") == [] and upstream.events("disconnected") == []


async def test_user_events_reply_and_connection_state(server, upstream):
    upstream.answers["connect"] = Answer(204, headers={"ce-connectionState": "s1"})
    upstream.answers["echo"] = Answer(200, b"pong", "text/plain", {"ce-connectionState": "s2"})
    client = await connect(ServerView.of(server), "chat", JSON_V1)
    await client.send({"type": "event", "event": "echo", "dataType": "text", "data": "ping", "ackId": 1})
    assert await client.recv() == {"type": "message", "from": "server", "dataType": "text", "data": "pong"}
    assert await client.recv() == {"type": "ack", "ackId": 1, "success": True}
    await client.send({"type": "event", "event": "echo", "dataType": "json", "data": {"n": 1}, "ackId": 2})
    await client.recv(), await client.recv()
    first, second = upstream.events("echo")
    assert first.headers["ce-type"] == "azure.webpubsub.user.echo" and first.body == b"ping"
    assert first.headers["content-type"].startswith("text/plain")
    assert first.headers["ce-connectionstate"] == "s1" and second.headers["ce-connectionstate"] == "s2"
    assert second.body == b'{"n":1}' and second.headers["content-type"].startswith("application/json")


async def test_reliable_client_event_reply_is_sequenced(server, upstream):
    upstream.answers["echo"] = Answer(200, b'{"ok":true}', "application/json")
    client = await connect(ServerView.of(server), "chat", JSON_RELIABLE_V1)
    await client.send({"type": "event", "event": "echo", "dataType": "binary",
                       "data": base64.b64encode(b"\x01").decode(), "ackId": 9})
    reply = await client.recv()
    assert reply["dataType"] == "json" and reply["data"] == {"ok": True} and reply["sequenceId"] == 1
    assert upstream.events("echo")[0].headers["content-type"] == "application/octet-stream"


async def test_raw_client_message_event(server, upstream):
    upstream.answers["message"] = Answer(200, b"\x00\xff", "application/octet-stream")
    client = await connect(ServerView.of(server), "chat")
    await client.ws.send("hello upstream")
    assert await client.recv() == b"\x00\xff"
    event = upstream.events("message")[0]
    assert event.body == b"hello upstream" and event.headers["ce-type"] == "azure.webpubsub.user.message"
    assert "ce-subprotocol" not in event.headers


async def test_failing_user_event_gives_error_ack_and_raw_close(server, upstream):
    upstream.answers["boom"] = Answer(500, b"broken")
    upstream.answers["message"] = Answer(500, b"broken")
    client = await connect(ServerView.of(server), "chat", JSON_V1)
    ack = await client.request({"type": "event", "event": "boom", "dataType": "text", "data": "x"})
    assert ack["success"] is False and ack["error"]["name"] == "InternalServerError"
    raw = await connect(ServerView.of(server), "chat")
    await raw.ws.send("x")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await raw.ws.recv()
    assert closed.value.rcvd.code == 1011


async def test_events_of_one_connection_keep_their_order(server, upstream):
    upstream.answers["slow"] = Answer(200, b"first", "text/plain", delay=0.3)
    upstream.answers["fast"] = Answer(200, b"second", "text/plain")
    client = await connect(ServerView.of(server), "chat", JSON_V1)
    await client.send({"type": "event", "event": "slow", "dataType": "text", "data": "1", "ackId": 1})
    await client.send({"type": "event", "event": "fast", "dataType": "text", "data": "2", "ackId": 2})
    got = [await client.recv() for _ in range(4)]
    assert [m.get("data", m.get("ackId")) for m in got] == ["first", 1, "second", 2]


async def test_slow_upstream_delays_only_its_events(upstream):
    upstream.answers["slow"] = Answer(200, b"late", "text/plain", delay=1.5)
    async with fastpush.Server(port=0, access_key=PRIMARY, secondary_key=SECONDARY,
                               config=_config(upstream, timeout=0.5)) as server:
        waiting = await connect(ServerView.of(server), "chat", JSON_V1)
        other = await connect(ServerView.of(server), "chat", JSON_V1)
        await waiting.send({"type": "event", "event": "slow", "dataType": "text", "data": "x", "ackId": 5})
        await server.hub("chat").send_to_all("push", content_type="text/plain")
        assert (await other.recv())["data"] == "push"
        assert (await waiting.recv())["data"] == "push"  # pushes flow while its event waits
        ack = await waiting.recv()
        assert ack["ackId"] == 5 and ack["error"]["name"] == "InternalServerError"
        upstream.answers["connect"] = Answer(200, b"{}", "application/json", delay=1.5)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(client_url(ServerView.of(server), "chat"))
        assert refused.value.response.status_code == 504


async def test_dead_upstream():
    dead = Upstream([PRIMARY])
    dead.close()  # nothing listens on its port any more
    async with fastpush.Server(port=0, access_key=PRIMARY, config=_config(dead, timeout=0.5)) as server:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(client_url(ServerView.of(server), "chat"))
        assert refused.value.response.status_code == 500
        await server.hub("other").send_to_all("still serving", content_type="text/plain")  # no handler: no failure


async def test_refused_validation_sends_no_events(upstream, caplog):
    upstream.refuse_validation = True
    async with fastpush.Server(port=0, access_key=PRIMARY, secondary_key=SECONDARY, config=_config(upstream)) as server:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(client_url(ServerView.of(server), "chat"))
        assert refused.value.response.status_code == 500
    assert [r.method for r in upstream.requests] == ["OPTIONS"]
    assert "refused abuse-protection validation" in caplog.text


async def test_anonymous_connect_policy(upstream):
    upstream.answers["connect"] = Answer(200, b'{"userId": "guest-1"}', "application/json")
    async with fastpush.Server(port=0, access_key=PRIMARY, secondary_key=SECONDARY,
                               config=_config(upstream, anonymous_connect_policy="allow")) as server:
        ws = await websockets.connect(f"ws://127.0.0.1:{server.port}/client/hubs/chat", subprotocols=[JSON_V1])
        assert json.loads(await ws.recv())["userId"] == "guest-1"
        await ws.close()
        with pytest.raises(websockets.InvalidStatus) as refused:  # other hubs still need a token
            await websockets.connect(f"ws://127.0.0.1:{server.port}/client/hubs/elsewhere")
        assert refused.value.response.status_code == 401
