"""Invocations to an HTTP application server (tests/events/upstream_server.py, the standard library),
over real sockets with a JSON client: the request the handler gets (the user event of the
invocation's name, with ce-invocationId), its answer as the invokeResponse, each failure as the
error the client gets, and cancelling (or dropping the socket) abandoning the HTTP request."""
from __future__ import annotations

import asyncio
import base64
import json

import pytest

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from tests.events.upstream_server import Answer, Upstream
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, connect, eventually

PRIMARY = "primary-access-key-for-invocation-tests-0123"


@pytest.fixture
def upstream():
    up = Upstream([PRIMARY])
    yield up
    up.close()


def _config(upstream: Upstream, timeout: float = 5.0) -> Config:
    handler = EventHandlerSettings(upstream.url_template(), user_event_pattern="*", system_events=["connect"])
    return Config(hubs={"chat": HubSettings(event_handlers=[handler])}, upstream_timeout_seconds=timeout)


@pytest.fixture
async def server(upstream):
    async with fastpush.Server(port=0, access_key=PRIMARY, config=_config(upstream)) as srv:
        yield srv


def invoke(invocation_id: str, event: str, **fields) -> dict:
    return {"type": "invoke", "invocationId": invocation_id, "target": "event", "event": event, **fields}


async def _eventually(predicate, seconds: float = 10.0):
    assert await eventually(predicate, seconds)


@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
async def test_the_invocation_is_the_user_event_and_its_answer_the_invoke_response(server, upstream, subprotocol):
    upstream.answers["connect"] = Answer(204, headers={"ce-connectionState": "s1"})
    upstream.answers["getTime"] = Answer(200, b'{"time":"12:00"}', "application/json", {"ce-connectionState": "s2"})
    upstream.answers["greet"] = Answer(200, b"hello", "text/plain; charset=utf-8")
    upstream.answers["raw"] = Answer(200, b"\x00\xff", "application/octet-stream")
    upstream.answers["nothing"] = Answer(204)
    client = await connect(ServerView.of(server), "chat", subprotocol, user_id="ann")
    await client.send(invoke("1", "getTime", dataType="json", data={"tz": "UTC"}))
    assert await client.recv() == {"type": "invokeResponse", "invocationId": "1", "success": True,
                                   "dataType": "json", "data": {"time": "12:00"}}
    await client.send(invoke("2", "greet", dataType="text", data="ann"))
    assert await client.recv() == {"type": "invokeResponse", "invocationId": "2", "success": True,
                                   "dataType": "text", "data": "hello"}
    await client.send(invoke("3", "raw", dataType="binary", data=base64.b64encode(b"\x01").decode()))
    assert await client.recv() == {"type": "invokeResponse", "invocationId": "3", "success": True,
                                   "dataType": "binary", "data": base64.b64encode(b"\x00\xff").decode()}
    await client.send(invoke("4", "nothing"))
    assert await client.recv() == {"type": "invokeResponse", "invocationId": "4", "success": True}

    (get_time,) = upstream.events("getTime")
    headers = get_time.headers
    assert get_time.path == "/upstream/chat/getTime" and get_time.body == b'{"tz":"UTC"}'
    assert headers["ce-type"] == "azure.webpubsub.user.getTime" and headers["ce-invocationid"] == "1"
    assert headers["content-type"] == "application/json; charset=utf-8" and headers["ce-userid"] == "ann"
    assert headers["ce-connectionid"] == client.connection_id and headers["ce-subprotocol"] == subprotocol
    assert headers["ce-connectionstate"] == "s1"
    assert upstream.events("greet")[0].headers["ce-connectionstate"] == "s2"  # the invocation's answer set it
    assert upstream.events("raw")[0].headers["content-type"] == "application/octet-stream"
    assert upstream.events("nothing")[0].body == b""
    assert upstream.bad_signatures == []
    await client.expect_silence(0.2)  # one answer each: no data message, no ack


@pytest.mark.parametrize(("answer", "name", "message"), [
    (Answer(400, b"no such order", "text/plain"), "BadRequest", "no such order"),
    (Answer(403, b"not yours", "text/plain"), "Forbidden", "not yours"),
    (Answer(404), "NotFound", "The event handler for 'order' refused the invocation (404)."),
    (Answer(500, b"Traceback: secret", "text/plain"), "InternalServerError",
     "The event handler for 'order' failed (500)."),
    (Answer(200, b"\xff\xfe", "text/plain"), "InternalServerError", "The event handler for 'order' failed."),
    (Answer(200, b"x" * (1024 * 1024 + 1), "text/plain"), "InternalServerError",
     "The event handler for 'order' failed."),
], ids=["400", "403", "404", "500", "text-not-utf8", "answer-too-large"])
async def test_an_upstream_error_is_the_clients_error(server, upstream, answer, name, message):
    upstream.answers["order"] = answer
    client = await connect(ServerView.of(server), "chat", JSON_V1)
    await client.send(invoke("o1", "order", dataType="text", data="42"))
    assert await client.recv() == {"type": "invokeResponse", "invocationId": "o1", "success": False,
                                   "error": {"name": name, "message": message}}
    upstream.answers["order"] = Answer(200, b"fine", "text/plain")
    await client.send(invoke("o2", "order"))  # the connection goes on
    assert (await client.recv())["data"] == "fine"


async def test_an_upstream_that_does_not_answer_in_time_is_a_timeout_and_pushes_flow_meanwhile(upstream):
    upstream.answers["slow"] = Answer(hold=True)
    async with fastpush.Server(port=0, access_key=PRIMARY, config=_config(upstream, timeout=0.5)) as server:
        client = await connect(ServerView.of(server), "chat", JSON_V1)
        await client.send(invoke("t1", "slow"))
        await server.hub("chat").send_to_all("push", content_type="text/plain")
        assert (await client.recv())["data"] == "push"
        assert await client.recv() == {"type": "invokeResponse", "invocationId": "t1", "success": False,
                                       "error": {"name": "Timeout",
                                                 "message": "The event handler for 'slow' did not answer in time."}}
        await _eventually(lambda: len(upstream.abandoned) == 1)  # the request is not left open


async def test_an_unreachable_upstream_is_an_internal_server_error():
    dead = Upstream([PRIMARY])
    dead.close()  # nothing listens on its port any more
    config = Config(hubs={"chat": HubSettings(event_handlers=[EventHandlerSettings(dead.url_template(),
                                                                                   user_event_pattern="*")])})
    async with fastpush.Server(port=0, access_key=PRIMARY, config=config) as server:
        client = await connect(ServerView.of(server), "chat", JSON_V1)
        await client.send(invoke("u1", "ask"))
        assert await client.recv() == {"type": "invokeResponse", "invocationId": "u1", "success": False,
                                       "error": {"name": "InternalServerError",
                                                 "message": "The event handler for 'ask' failed."}}


async def test_cancel_invocation_abandons_the_upstream_request(server, upstream):
    upstream.answers["long"] = Answer(hold=True)
    upstream.answers["short"] = Answer(200, b"ok", "text/plain")
    client = await connect(ServerView.of(server), "chat", JSON_V1)
    await client.send(invoke("c1", "long"))
    await _eventually(lambda: upstream.events("long"))
    await client.send({"type": "cancelInvocation", "invocationId": "c1"})
    await _eventually(lambda: len(upstream.abandoned) == 1)
    assert upstream.abandoned[0].headers["ce-invocationid"] == "c1"
    await client.expect_silence(0.3)  # the client gave up: nothing is sent for it
    await client.send(invoke("c1", "short"))  # its id is free again, and the connection goes on
    assert (await client.recv())["data"] == "ok"


@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
async def test_a_socket_that_drops_abandons_its_upstream_requests(server, upstream, subprotocol):
    """Even a reliable session, which waits for its client to come back: the SDKs give up their
    invocations when the socket drops, so nobody would read the answers."""
    upstream.answers["long"] = Answer(hold=True)
    client = await connect(ServerView.of(server), "chat", subprotocol)
    for i in range(3):
        await client.send(invoke(f"g{i}", "long"))
    await _eventually(lambda: len(upstream.events("long")) == 3)
    client.ws.transport.abort()  # no close frame
    await _eventually(lambda: len(upstream.abandoned) == 3)


async def test_invocations_and_events_of_one_connection_do_not_wait_for_each_other(server, upstream):
    upstream.answers["long"] = Answer(hold=True)
    upstream.answers["short"] = Answer(200, b"quick", "text/plain")
    client = await connect(ServerView.of(server), "chat", JSON_V1)
    await client.send(invoke("l1", "long"))
    await _eventually(lambda: upstream.events("long"))
    await client.send({"type": "event", "event": "short", "dataType": "text", "data": "e", "ackId": 1})
    assert await client.recv() == {"type": "message", "from": "server", "dataType": "text", "data": "quick"}
    assert await client.recv() == {"type": "ack", "ackId": 1, "success": True}
    await client.send(invoke("s1", "short"))
    assert (await client.recv())["invocationId"] == "s1"
    await client.send({"type": "cancelInvocation", "invocationId": "l1"})
    await _eventually(lambda: upstream.abandoned)


async def test_no_handler_for_the_invocation_is_not_found(upstream):
    handler = EventHandlerSettings(upstream.url_template(), user_event_pattern="order*")
    config = Config(hubs={"chat": HubSettings(event_handlers=[handler])})
    async with fastpush.Server(port=0, access_key=PRIMARY, config=config) as server:
        client = await connect(ServerView.of(server), "chat", JSON_V1)
        await client.send(invoke("n1", "cancel"))
        answer = await client.recv()
        assert answer["error"] == {"name": "NotFound", "message": "No event handler is configured for event 'cancel'."}
        other = await connect(ServerView.of(server), "elsewhere", JSON_V1)  # a hub with no handlers at all
        await other.send(invoke("n2", "order"))
        assert (await other.recv())["error"]["name"] == "NotFound"
    assert upstream.events("cancel") == []


async def test_an_invoke_response_is_not_json_of_the_clients_choosing(server, upstream):
    """The id is echoed as a JSON string: quotes and backslashes in it cannot break the frame."""
    upstream.answers["ask"] = Answer(200, b"a", "text/plain")
    client = await connect(ServerView.of(server), "chat", JSON_V1)
    tricky = '","success":true,"x":"\\'
    await client.send(invoke(tricky, "ask"))
    raw = await asyncio.wait_for(client.ws.recv(), 5)
    assert json.loads(raw) == {"type": "invokeResponse", "invocationId": tricky, "success": True,
                               "dataType": "text", "data": "a"}
