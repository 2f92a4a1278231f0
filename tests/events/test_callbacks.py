"""In-process event handlers for embedding: the same events as Python callbacks, sync or async."""
from __future__ import annotations

import asyncio

import pytest
import websockets

import fastpush
from fastpush import ConnectResult, EventRejected
from fastpush.config import ConfigError, load_config
from tests.helpers import JSON_V1, ServerView, client_url, connect

pytestmark = pytest.mark.both_loops  # the embedding API promises asyncio and uvloop: each test runs on both


async def test_callbacks_decide_identity_answer_events_and_hear_disconnects():
    seen: list = []

    async def on_connect(ctx, request):
        if request.query.get("deny"):
            raise EventRejected(403, "not today")
        return ConnectResult(user_id="u-" + request.claims["sub"][0], groups=["lobby"])

    def on_event(ctx, name, payload):  # a plain function works too
        seen.append((name, payload.data))
        return {"echo": payload.data.decode()}

    async with fastpush.Server(port=0) as server:
        hub = server.hub("app")
        hub.handle_events(on_connect=on_connect, on_connected=lambda ctx: seen.append(("connected", ctx.user_id)),
                          on_disconnected=lambda ctx, reason: seen.append(("disconnected", ctx.user_id)),
                          on_event=on_event)
        client = await connect(ServerView.of(server), "app", JSON_V1, user_id="7")
        assert client.user_id == "u-7"
        await hub.send_to_group("lobby", "welcome", content_type="text/plain")
        assert (await client.recv())["data"] == "welcome"
        await client.send({"type": "event", "event": "say", "dataType": "text", "data": "hey", "ackId": 1})
        assert (await client.recv())["data"] == {"echo": "hey"}
        assert (await client.recv())["success"] is True
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(client_url(ServerView.of(server), "app", user_id="8") + "&deny=1")
        assert refused.value.response.status_code == 403
        await client.close()
        for _ in range(100):
            if ("disconnected", "u-7") in seen:
                break
            await asyncio.sleep(0.02)
    assert seen == [("connected", "u-7"), ("say", b"hey"), ("disconnected", "u-7")]


async def test_a_raising_callback_is_an_error_ack_not_a_crash():
    async with fastpush.Server(port=0) as server:
        server.hub("app").handle_events(on_event=lambda ctx, name, payload: 1 / 0)
        client = await connect(ServerView.of(server), "app", JSON_V1)
        ack = await client.request({"type": "event", "event": "x", "dataType": "text", "data": "y"})
        assert ack["error"]["name"] == "InternalServerError"
        await server.hub("app").send_to_all("alive", content_type="text/plain")
        assert (await client.recv())["data"] == "alive"


def test_the_example_config_loads():
    from pathlib import Path
    example = load_config(Path(__file__).parents[2] / "examples" / "event_handlers.toml")
    assert example.hubs["chat"].event_handlers[0].system_events == ["connect", "connected", "disconnected"]


def test_config_file(tmp_path):
    good = tmp_path / "fastpush.toml"
    good.write_text('upstreamTimeoutSeconds = 5\nredisUrl = "redis://127.0.0.1:6390"\n'
                    '[hubs.chat]\nanonymousConnectPolicy = "allow"\n'
                    '[[hubs.chat.eventHandlers]]\nurlTemplate = "http://127.0.0.1:3000/api/{hub}/{event}"\n'
                    'userEventPattern = "message,chat"\nsystemEvents = ["connect", "disconnected"]\n')
    config = load_config(good)
    assert config.redis_url == "redis://127.0.0.1:6390"
    handler = config.hubs["chat"].event_handlers[0]
    assert handler.user_event_pattern == "message,chat" and handler.system_events == ["connect", "disconnected"]
    for text, complaint in [('[hubs.chat]\nanonymousConnectPolicy = "maybe"\n', "anonymousConnectPolicy"),
                            ('[[hubs.chat.eventHandlers]]\nurlTemplate = "ftp://x"\n', "urlTemplate"),
                            ('[[hubs.chat.eventHandlers]]\nurlTemplate = "http://x"\nsystemEvents = ["boot"]\n',
                             "boot"),
                            ('[hubs.chat]\nevenHandlers = []\n', "evenHandlers"),
                            ("[hubs", "bad.toml")]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=complaint):
            load_config(bad)


async def test_a_missing_callback_answers_as_no_handler_would():
    from fastpush.events.callbacks import CallbackHandler
    from fastpush.events.model import ConnectRequest, EventContext
    from fastpush.protocol.payload import DataType, Payload

    handler = CallbackHandler()
    ctx = EventContext("app", "c1", None, None)
    assert handler.system_events == ()
    assert await handler.connect(ctx, ConnectRequest({}, {}, {}, [])) is None
    await handler.connected(ctx)
    await handler.disconnected(ctx, "bye")
    assert await handler.user_event(ctx, "e", Payload(DataType.TEXT, b"x")) is None


async def test_sync_and_async_callbacks_are_both_settled():
    from fastpush.events.callbacks import CallbackHandler
    from fastpush.events.model import ConnectRequest, EventContext
    from fastpush.protocol.payload import DataType, Payload

    async def on_connect(ctx, request):
        return ConnectResult(user_id="async")

    handler = CallbackHandler(on_connect=on_connect, on_event=lambda ctx, name, payload: "pong")
    ctx = EventContext("app", "c1", None, None)
    assert (await handler.connect(ctx, ConnectRequest({}, {}, {}, []))).user_id == "async"
    reply = await handler.user_event(ctx, "e", Payload(DataType.TEXT, b"x"))
    assert reply is not None and reply.payload == Payload(DataType.TEXT, b"pong")
