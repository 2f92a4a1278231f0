"""Invocations attacked over real sockets by a hostile JSON client: a flood holds at most
MAX_INVOCATIONS_IN_FLIGHT per connection at the handler (the rest are refused, each with one
answer, never queued), one id used over and over reaches the handler once, ids that are too long
or not text close 1007 without being echoed, invocations that nothing handles and cancellations
of nothing hold nothing, the payload is bounded by the message limit, a client that leaves takes its
invocations with it, and the protobuf family, which defines no invocation, closes 1007."""
from __future__ import annotations

import asyncio
import uuid

import pytest
import websockets

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from fastpush.invocations import MAX_INVOCATIONS_IN_FLIGHT
from fastpush.protocol.names import MAX_INVOCATION_ID_LENGTH
from tests.events.upstream_server import Answer, Upstream
from tests.helpers import JSON_V1, ServerView, client_url, connect, eventually
from tests.security.conftest import assert_still_serving
from tests.webpubsub_proto import Downstream
from tests.webpubsub_proto import Upstream as ProtoUpstream

FLOOD = 5_000
PROTOBUF_V1 = "protobuf.webpubsub.azure.v1"


def invoke(invocation_id: str, event: str = "ask", **fields) -> dict:
    return {"type": "invoke", "invocationId": invocation_id, "target": "event", "event": event, **fields}


class Hanging:
    """An in-process on_event whose invocations never answer until cancelled."""

    def __init__(self):
        self.started = 0
        self.cancelled = 0

    async def __call__(self, ctx, name, payload):
        if name == "echo":
            return payload.data.decode()
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@pytest.fixture
async def hanging():
    handler = Hanging()
    async with fastpush.Server(port=0) as server:
        server.hub("chat").handle_events(on_event=handler)
        yield ServerView.of(server), handler


async def _answers(client, count: int) -> list[dict]:
    answers = [await client.recv() for _ in range(count)]
    await client.expect_silence(0.3)  # exactly one answer each
    return answers


async def test_a_flood_of_invocations_holds_at_most_the_limit_and_leaves_with_the_client(hanging):
    view, handler = hanging
    attacker = await connect(view, "chat", JSON_V1)
    for i in range(FLOOD):
        await attacker.send(invoke(f"f{i}", data="x" * 100, dataType="text"))
    refused = await _answers(attacker, FLOOD - MAX_INVOCATIONS_IN_FLIGHT)
    assert {(a["success"], a["error"]["name"]) for a in refused} == {(False, "BadRequest")}
    assert await eventually(lambda: handler.started == MAX_INVOCATIONS_IN_FLIGHT)  # and no more: all refused
    await assert_still_serving(view)
    await attacker.close()
    assert await eventually(lambda: handler.cancelled == MAX_INVOCATIONS_IN_FLIGHT)


async def test_a_flood_reaches_an_http_upstream_at_most_the_limit_at_a_time():
    upstream = Upstream(["k" * 44])
    upstream.answers["ask"] = Answer(hold=True)
    try:
        handler = EventHandlerSettings(upstream.url_template(), user_event_pattern="*")
        config = Config(hubs={"chat": HubSettings(event_handlers=[handler])})
        async with fastpush.Server(port=0, access_key="k" * 44, config=config) as server:
            attacker = await connect(ServerView.of(server), "chat", JSON_V1)
            for i in range(1_000):
                await attacker.send(invoke(f"h{i}"))
            await _answers(attacker, 1_000 - MAX_INVOCATIONS_IN_FLIGHT)  # every other one is refused already
            assert await eventually(lambda: len(upstream.events("ask")) == MAX_INVOCATIONS_IN_FLIGHT)
            await attacker.close()
            assert await eventually(lambda: len(upstream.abandoned) == MAX_INVOCATIONS_IN_FLIGHT)
    finally:
        upstream.close()


async def test_one_id_over_and_over_reaches_the_handler_once(hanging):
    view, handler = hanging
    attacker = await connect(view, "chat", JSON_V1)
    for _ in range(2_000):
        await attacker.send(invoke("same"))
    refused = await _answers(attacker, 1_999)
    assert {(a["invocationId"], a["error"]["name"]) for a in refused} == {("same", "BadRequest")}
    assert await eventually(lambda: handler.started == 1)


@pytest.mark.parametrize("invocation_id", ["i" * 512 * 1024, "i" * (MAX_INVOCATION_ID_LENGTH + 1), "a\x00b", 7,
                                           ["list"], ""],
                         ids=["512KiB", "one-too-long", "nul", "number", "list", "empty"])
@pytest.mark.parametrize("kind", ["invoke", "cancelInvocation"])
async def test_an_unusable_id_closes_1007_and_is_not_echoed(hanging, kind, invocation_id):
    view, handler = hanging
    attacker = await connect(view, "chat", JSON_V1)
    await attacker.send({**invoke("x"), "type": kind, "invocationId": invocation_id})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await attacker.recv()  # no invokeResponse first
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert len(closed.value.rcvd.reason.encode()) <= 123
    assert handler.started == 0
    await assert_still_serving(view)


async def test_invocations_that_nothing_handles_are_answered_and_hold_nothing(server):
    """The shared server has no event handlers at all."""
    hub = "noinvoke_" + uuid.uuid4().hex[:8]
    attacker = await connect(server, hub, JSON_V1)
    for i in range(2_000):
        await attacker.send(invoke(f"n{i}", event=f"e{i}"))
    answers = await _answers(attacker, 2_000)
    assert {(a["success"], a["error"]["name"]) for a in answers} == {(False, "NotFound")}
    for i in range(10_000):  # cancelling what was never started: ignored
        await attacker.send({"type": "cancelInvocation", "invocationId": f"n{i}"})
    await attacker.expect_silence(0.3)
    await assert_still_serving(server)


async def test_an_invocation_is_bounded_by_the_message_limit():
    handler = Hanging()
    async with fastpush.Server(port=0, max_message_bytes=64 * 1024) as server:
        server.hub("chat").handle_events(on_event=handler)
        attacker = await connect(ServerView.of(server), "chat", JSON_V1)
        await attacker.send(invoke("big", dataType="text", data="x" * 64 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await attacker.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        client = await connect(ServerView.of(server), "chat", JSON_V1)
        await client.send(invoke("small", "echo", dataType="text", data="x" * 60 * 1024))
        assert (await client.recv())["data"] == "x" * 60 * 1024
    assert handler.started == 0


async def test_the_protobuf_family_has_no_invocation(hanging):
    """Neither protobuf schema defines one: an upstream message of an undefined field (what an
    invoke would have to be) closes 1007; the family's own user events still reach the handler."""
    view, _ = hanging
    ws = await websockets.connect(client_url(view, "chat"), subprotocols=[PROTOBUF_V1])
    assert Downstream.FromString(await ws.recv()).system_message.connected_message.connection_id
    event = ProtoUpstream()
    event.event_message.event = "echo"
    event.event_message.data.text_data = "over protobuf"
    event.event_message.ack_id = 1
    await ws.send(event.SerializeToString())
    reply, ack = Downstream.FromString(await ws.recv()), Downstream.FromString(await ws.recv())
    assert reply.data_message.data.text_data == "over protobuf" and ack.ack_message.success
    invocation_like = b"\x52\x05\x0a\x03inv"  # field 10, length-delimited: {1: "inv"}
    await ws.send(invocation_like)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
