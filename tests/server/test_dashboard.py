"""The dashboard's data and actions against a real server and real clients: the hub view's pages,
closing and sending through the node, the test client's token, and the Live Trace's lines for
connections, client messages and REST calls (payloads only when asked)."""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from fastpush import Server
from fastpush.config import Config, EventHandlerSettings, HubSettings
from fastpush.dashboard.views import MAX_PAGE
from tests.conftest import ACCESS_KEY, _run_in_thread, _stop
from tests.dashboard_client import Dashboard, lines_until
from tests.events.upstream_server import Answer as UpstreamAnswer
from tests.events.upstream_server import Upstream
from tests.helpers import JSON_V1, connect, eventually

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def user(server) -> Dashboard:
    dashboard = Dashboard(server.endpoint)
    assert dashboard.login(server.call(server.server.dashboard.login_url)).status == 200
    return dashboard


async def call(fn, *args, **kwargs):
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_connection_pages_cover_every_connection_once(server, user, hub_name):
    clients = [await connect(server, hub_name, JSON_V1 if i % 2 else None, user_id=f"u{i % 7}", groups=[f"g{i % 3}"])
               for i in range(250)]
    try:
        seen: list[dict] = []
        offset = 0
        while True:
            page = (await call(user.get, f"api/hubs/{hub_name}/connections?offset={offset}&limit={MAX_PAGE}")).json()
            assert page["total"] == 250 and len(page["connections"]) <= MAX_PAGE
            if not page["connections"]:
                break
            seen += page["connections"]
            offset += len(page["connections"])
        ids = {c.connection_id for c in clients if c.connection_id}
        assert len(seen) == 250 and len({row["connectionId"] for row in seen}) == 250
        assert ids <= {row["connectionId"] for row in seen}
        row = next(r for r in seen if r["connectionId"] == clients[1].connection_id)
        assert row["userId"] == "u1" and row["groups"] == ["g1"] and row["groupCount"] == 1
        assert row["subprotocol"] == JSON_V1 and row["ageSeconds"] >= 0 and row["queuedBytes"] == 0
        of_user = (await call(user.get, f"api/hubs/{hub_name}/connections?user=u3&limit=200")).json()
        assert of_user["total"] == len([i for i in range(250) if i % 7 == 3])
        assert {r["userId"] for r in of_user["connections"]} == {"u3"}
        in_group = (await call(user.get, f"api/hubs/{hub_name}/connections?group=g2&limit=200")).json()
        assert in_group["total"] == len([i for i in range(250) if i % 3 == 2])
        groups = (await call(user.get, f"api/hubs/{hub_name}/groups")).json()
        assert sorted((g["name"], g["members"]) for g in groups["groups"]) == [("g0", 84), ("g1", 83), ("g2", 83)]
        hubs = (await call(user.get, "api/hubs")).json()["hubs"]
        assert {"name": hub_name, "connections": 250, "groups": 3, "users": 7, "slowClientCloses": 0} in hubs
    finally:
        for client in clients:
            await client.close()
    assert await eventually(lambda: user.get(f"api/hubs/{hub_name}/connections").json()["total"] == 0)


@pytest.mark.parametrize("query", ["limit=0", f"limit={MAX_PAGE + 1}", "offset=-1"])
def test_a_page_out_of_bounds_is_a_400(user, query):
    assert user.get(f"api/hubs/chat/connections?{query}").status == 400


def test_an_unknown_hub_has_no_connections_and_is_not_made(server, user):
    name = "never_" + uuid.uuid4().hex[:8]
    assert user.get(f"api/hubs/{name}/connections").json() == {"offset": 0, "total": 0, "connections": []}
    assert user.get(f"api/hubs/{name}/groups").json()["total"] == 0
    assert server.call(server.server.node.find, name) is None


async def test_actions_reach_clients_through_the_node(server, user, hub_name):
    ann = await connect(server, hub_name, JSON_V1, user_id="ann", groups=["room"])
    bob = await connect(server, hub_name, JSON_V1, user_id="bob")
    try:
        sends = [({"data": "to all"}, {ann, bob}), ({"target": "group", "name": "room", "data": "to room"}, {ann}),
                 ({"target": "user", "name": "bob", "data": "to bob"}, {bob}),
                 ({"target": "connection", "name": ann.connection_id, "data": "{\"a\": 1}",
                   "contentType": "application/json"}, {ann})]
        for body, receivers in sends:
            assert (await call(user.post, f"api/hubs/{hub_name}/send", body)).status == 202
            for client in receivers:
                message = await client.recv()
                assert message["type"] == "message"
                assert message["from"] == ("group" if body.get("target") == "group" else "server")
                assert message["data"] == ({"a": 1} if body.get("contentType") else body["data"])
            for client in {ann, bob} - receivers:
                await client.expect_silence(0.2)
        closed = await call(user.post, f"api/hubs/{hub_name}/connections/{bob.connection_id}/close",
                            {"reason": "bye"})
        assert closed.status == 204
        disconnected = await bob.recv()
        assert disconnected["event"] == "disconnected" and disconnected["message"] == "bye"
        await bob.ws.wait_closed()
        assert bob.ws.close_code == 1000
    finally:
        await ann.close()
        await bob.close()


@pytest.mark.parametrize(("body", "words"), [
    ({"target": "group", "data": "x"}, "needs its name"), ({"target": "group", "name": " ", "data": "x"}, "group"),
    ({"target": "everyone", "data": "x"}, "target"), ({"data": "{", "contentType": "application/json"}, "JSON"),
    ({"data": "x", "contentType": "image/png"}, "Content-Type"), ({"data": 5}, "str"),
    ({"data": "x", "more": 1}, "more")])
def test_a_bad_send_is_a_400_saying_why(user, body, words):
    answer = user.post("api/hubs/chat/send", body)
    assert answer.status == 400 and words in answer.json()["message"]


async def test_the_test_client_token_connects_with_its_user_roles_and_groups(server, user, hub_name):
    answer = await call(user.post, "api/token", {"hub": hub_name, "userId": "tester", "groups": ["lobby"],
                                                  "roles": ["webpubsub.joinLeaveGroup"]})
    assert answer.status == 200
    path = answer.json()["path"]
    client = await connect(server, hub_name, JSON_V1, url="ws" + server.endpoint[4:] + path)
    try:
        assert client.user_id == "tester"
        assert (await client.request({"type": "joinGroup", "group": "other"}))["success"] is True
        denied = await client.request({"type": "sendToGroup", "group": "other", "data": "x"})
        assert denied["success"] is False and denied["error"]["name"] == "Forbidden"
        await call(user.post, f"api/hubs/{hub_name}/send", {"target": "group", "name": "lobby", "data": "hello"})
        assert (await client.recv())["data"] == "hello"
    finally:
        await client.close()


@pytest.mark.parametrize(("body", "words"), [
    ({"hub": "1bad"}, "hub"), ({"hub": "h", "roles": ["webpubsub.sendToGroups.a*.b*.c*.d*.e*.f*"]}, "Role"),
    ({"hub": "h", "groups": [""]}, "group"), ({"hub": "h", "minutes": 0}, "minutes"),
    ({"hub": "h", "userId": "a\nb"}, "user")])
def test_a_bad_token_request_is_a_400(user, body, words):
    answer = user.post("api/token", body)
    assert answer.status == 400 and words.lower() in answer.json()["message"].lower()


async def test_the_live_trace_shows_connections_messages_and_rest_calls(server, user, hub_name):
    ws = await call(user.trace, payloads=False)
    try:
        assert await eventually(lambda: server.server.trace.active)
        client = await connect(server, hub_name, JSON_V1, user_id="ann",
                               roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
        connected = await call(lines_until, ws, lambda line: line["event"] == "connected" and line["hub"] == hub_name)
        assert connected[-1]["kind"] == "connection" and connected[-1]["user"] == "ann"
        await client.request({"type": "joinGroup", "group": "room"})
        joined = await call(lines_until, ws, lambda line: line["event"] == "joinGroup")
        assert joined[-1]["kind"] == "message" and joined[-1]["target"] == "room" and "payload" not in joined[-1]
        service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub_name)
        await call(service.send_to_group, "room", "secret words", content_type="text/plain")
        rest = await call(lines_until, ws, lambda line: line["kind"] == "rest")
        assert rest[-1]["event"] == "POST" and rest[-1]["status"] == 202 and rest[-1]["hub"] == hub_name
        assert rest[-1]["target"] == f"/api/hubs/{hub_name}/groups/room/:send" and rest[-1]["size"] == 12
        assert "payload" not in rest[-1]
        assert (await client.recv())["data"] == "secret words"
        # Payloads switched on: the REST body is shown.
        await call(ws.send, json.dumps({"payloads": True}))
        assert await eventually(lambda: server.server.trace.payloads)
        await call(service.send_to_all, "shown now", content_type="text/plain")
        shown = await call(lines_until, ws, lambda line: line["kind"] == "rest")
        assert shown[-1]["payload"] == {"text": "shown now", "bytes": 9}
        await client.close()
        left = await call(lines_until, ws, lambda line: line["event"] == "disconnected" and line["hub"] == hub_name)
        assert left[-1]["code"] == 1000
    finally:
        await call(ws.close)
    assert await eventually(lambda: not server.server.trace.active)


async def test_the_trace_filters_by_kind_and_hub(server, user, hub_name):
    ws = await call(user.trace, kinds=["connection"], hub=hub_name)
    try:
        assert await eventually(lambda: server.server.trace.active)
        other = await connect(server, hub_name + "_other", JSON_V1)
        await other.close()
        mine = await connect(server, hub_name, JSON_V1)
        await mine.send({"type": "ping"})
        await mine.close()
        seen = await call(lines_until, ws, lambda line: line["event"] == "disconnected")
        assert {line["hub"] for line in seen} == {hub_name}
        assert {line["kind"] for line in seen} == {"connection"}
    finally:
        await call(ws.close)


async def test_a_refused_handshake_shows_in_the_trace(server, user, hub_name):
    ws = await call(user.trace, kinds=["connection"])
    try:
        assert await eventually(lambda: server.server.trace.active)
        with pytest.raises(Exception):  # noqa: B017 (the client's refusal type is the library's)
            await connect(server, hub_name, JSON_V1, url="ws" + server.endpoint[4:] + f"/client/hubs/{hub_name}"
                                                            "?access_token=not.a.token")
        refused = await call(lines_until, ws, lambda line: line["event"] == "refused")
        assert refused[-1]["status"] == 401 and refused[-1]["address"] == "127.0.0.1"
    finally:
        await call(ws.close)


@pytest.fixture
def upstream_server():
    """A server whose hub `chat` sends its events to a real HTTP upstream (which fails `connected`)."""
    upstream = Upstream([ACCESS_KEY])
    upstream.answers["connected"] = UpstreamAnswer(500)
    handler = EventHandlerSettings(upstream.url_template(), user_event_pattern="*",
                                   system_events=["connected", "disconnected"])
    config = Config(hubs={"chat": HubSettings(event_handlers=[handler])}, upstream_timeout_seconds=5)
    running, thread, _ = _run_in_thread(lambda: Server("127.0.0.1", 0, access_key=ACCESS_KEY, config=config))
    yield running, upstream
    _stop(running, thread)
    upstream.close()


async def test_the_live_trace_shows_upstream_calls_and_their_outcome(upstream_server):
    server, upstream = upstream_server
    user = Dashboard(server.endpoint)
    assert (await call(user.login, server.call(server.server.dashboard.login_url))).status == 200
    ws = await call(user.trace, kinds=["upstream"], payloads=True)
    try:
        assert await eventually(lambda: server.server.trace.payloads)
        client = await connect(server, "chat", JSON_V1, user_id="ann")
        failed = await call(lines_until, ws, lambda line: line["event"] == "connected")
        assert failed[-1]["kind"] == "upstream" and failed[-1]["status"] == 500
        assert failed[-1]["target"] == upstream.url_template().replace("{hub}", "chat").replace("{event}",
                                                                                                  "connected")
        await client.send({"type": "event", "event": "ping", "dataType": "text", "data": "hello upstream"})
        answered = await call(lines_until, ws, lambda line: line["event"] == "ping")
        assert answered[-1]["status"] == 204 and answered[-1]["payload"]["text"] == "hello upstream"
        assert answered[-1]["size"] == len("hello upstream") and answered[-1]["durationMs"] >= 0
        await client.close()
        await call(lines_until, ws, lambda line: line["event"] == "disconnected")
    finally:
        await call(ws.close)
