"""Invocations (`invoke`, `cancelInvocation`) in the session, without sockets, with the in-process
handler (on_event) that the embedding API gives: the answer comes back as an invokeResponse, a
refusal as its error, each invocation runs beside the others and the connection's events, at most
MAX_INVOCATIONS_IN_FLIGHT at a time, and cancelling one (or losing the socket) cancels its handler.
Also the CloudEvents request an upstream gets for an invocation and how its answer is read."""
from __future__ import annotations

import asyncio
import base64
import json

import pytest

from fastpush.events.callbacks import CallbackHandler
from fastpush.events.cloudevents import invocation, invocation_reply
from fastpush.events.dispatcher import HubEvents
from fastpush.events.model import EventContext, EventRejected, EventReply, HandlerRule, InvocationFailed
from fastpush.invocations import MAX_INVOCATIONS_IN_FLIGHT
from fastpush.protocol.close_codes import CloseCode
from fastpush.protocol.json_protocol import JSON_RELIABLE_V1, JSON_V1
from fastpush.protocol.names import MAX_INVOCATION_ID_LENGTH
from fastpush.protocol.payload import DataType, Payload
from tests.unit.test_session import Conn, settle


def invoke(invocation_id="i1", event="ask", **fields) -> dict:
    return {"type": "invoke", "invocationId": invocation_id, "target": "event", "event": event, **fields}


def handled(on_event, pattern="*") -> HubEvents:
    events = HubEvents()
    events.add(HandlerRule(pattern), CallbackHandler(on_event=on_event))
    return events


def answers(conn: Conn) -> list[dict]:
    return [m for m in conn.messages() if m["type"] == "invokeResponse"]


def error_of(answer: dict) -> tuple[str, bool, str]:
    return answer["invocationId"], answer["success"], answer["error"]["name"]


class Gated:
    """An async on_event that waits until opened; records what it got and whether it was cancelled."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.got: list[tuple[str, Payload]] = []
        self.cancelled = 0

    async def __call__(self, ctx, name, payload):
        self.got.append((name, payload))
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return f"done {payload.data.decode()}"


# --- answers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
@pytest.mark.parametrize(("returned", "data_type", "data"), [
    ({"time": 12}, "json", {"time": 12}),
    ("twelve", "text", "twelve"),
    (b"\x00\xff", "binary", base64.b64encode(b"\x00\xff").decode()),
    (EventReply(Payload(DataType.TEXT, b"via reply")), "text", "via reply"),
])
async def test_the_handlers_answer_is_the_invoke_response(subprotocol, returned, data_type, data):
    got = []
    conn = Conn(subprotocol, events=handled(lambda ctx, name, payload: got.append((name, payload)) or returned))
    conn.open()
    conn.send(invoke("7", "getTime", dataType="json", data={"tz": "UTC"}))
    await settle()
    assert got == [("getTime", Payload(DataType.JSON, b'{"tz":"UTC"}'))]
    assert answers(conn) == [{"type": "invokeResponse", "invocationId": "7", "success": True,
                              "dataType": data_type, "data": data}]
    assert [entry[0] for entry in conn.log] == ["frame"]  # not a numbered data message, no ack


async def test_no_answer_is_a_success_without_data_and_no_data_is_an_empty_binary_payload():
    got = []
    conn = Conn(events=handled(lambda ctx, name, payload: got.append(payload))).open()
    conn.send({"type": "invoke", "invocationId": "1", "target": "event", "event": "ping"})  # the SDK, for null content
    await settle()
    assert got == [Payload(DataType.BINARY, b"")]
    assert answers(conn) == [{"type": "invokeResponse", "invocationId": "1", "success": True}]


@pytest.mark.parametrize(("raised", "name", "message"), [
    (EventRejected(400, "no such order"), "BadRequest", "no such order"),
    (EventRejected(401), "Forbidden", "The event handler for 'ask' refused the invocation (401)."),
    (EventRejected(403, "not yours"), "Forbidden", "not yours"),
    (EventRejected(404, "gone"), "NotFound", "gone"),
    (EventRejected(409, "conflict"), "BadRequest", "conflict"),
    (EventRejected(503, "internal detail"), "InternalServerError", "The event handler for 'ask' failed (503)."),
    (ValueError("a bug"), "InternalServerError", "The event handler for 'ask' failed."),
])
async def test_a_refusal_is_the_invoke_responses_error(raised, name, message):
    def on_event(ctx, event, payload):
        raise raised
    conn = Conn(events=handled(on_event)).open()
    conn.send(invoke("x", data="?", dataType="text"))
    await settle()
    [answer] = answers(conn)
    assert answer == {"type": "invokeResponse", "invocationId": "x", "success": False,
                      "error": {"name": name, "message": message}}


async def test_the_answers_connection_state_is_kept():
    conn = Conn(events=handled(lambda ctx, name, payload: EventReply(None, "state-1"))).open()
    conn.send(invoke())
    await settle()
    assert conn._context().state == "state-1" and answers(conn)[0]["success"] is True


# --- requests that cannot be invoked --------------------------------------------------------------------------
def test_without_a_handler_for_the_event_it_is_not_found():
    conn = Conn(events=handled(lambda *a: "x", pattern="other")).open()
    conn.send(invoke("1", "ask"))
    no_events = Conn().open()
    no_events.send(invoke("2", "ask"))
    assert [error_of(a) for a in answers(conn) + answers(no_events)] == [("1", False, "NotFound"),
                                                                         ("2", False, "NotFound")]
    assert answers(conn)[0]["error"]["message"] == "No event handler is configured for event 'ask'."


@pytest.mark.parametrize("message", [
    invoke(event="9lives"),
    invoke(event=7),
    invoke(target="server"),
    invoke(dataType="text", data=5),
    invoke(dataType="binary", data="not base64!"),
    invoke(dataType="yaml", data="a: 1"),
    {"type": "invoke", "invocationId": "i1", "target": "event"},
], ids=["bad-event-name", "event-not-string", "other-target", "text-not-string", "bad-base64",
        "unknown-data-type", "no-event"])
def test_a_bad_invocation_with_a_usable_id_is_a_bad_request(message):
    conn = Conn(events=handled(lambda *a: "never")).open()
    conn.send(message)
    assert [error_of(a) for a in answers(conn)] == [("i1", False, "BadRequest")]
    assert conn.closes() == []


@pytest.mark.parametrize("invocation_id", [None, 5, "", "x" * (MAX_INVOCATION_ID_LENGTH + 1), "a\r\nb"],
                         ids=["missing", "number", "empty", "too-long", "control-characters"])
@pytest.mark.parametrize("kind", ["invoke", "cancelInvocation"])
def test_an_unusable_invocation_id_is_malformed(kind, invocation_id):
    conn = Conn(events=handled(lambda *a: "never")).open()
    message = {"type": kind, "target": "event", "event": "ask"}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    conn.send(message)
    assert [code for code, _ in conn.closes()] == [CloseCode.INVALID_PAYLOAD] and answers(conn) == []
    conn = Conn().open()
    conn.send({**message, "ackId": 3})  # an ackId gets its error ack instead
    assert conn.acks() == [(3, False, "BadRequest")] and conn.closes() == []


def test_the_longest_id_is_accepted():
    conn = Conn().open()
    conn.send(invoke("é" * MAX_INVOCATION_ID_LENGTH))
    assert [error_of(a) for a in answers(conn)] == [("é" * MAX_INVOCATION_ID_LENGTH, False, "NotFound")]


# --- in flight ------------------------------------------------------------------------------------------------
async def test_invocations_run_beside_each_other_and_the_connections_events():
    handler = Gated()
    fast = {"quick"}

    async def on_event(ctx, name, payload):
        return "quick answer" if name in fast else await handler(ctx, name, payload)
    conn = Conn(events=handled(on_event)).open()
    conn.send(invoke("slow", "slow", dataType="text", data="s"))
    conn.send({"type": "event", "event": "slow", "dataType": "text", "data": "e", "ackId": 1})
    conn.send(invoke("fast", "quick"))
    await settle()
    assert [a["invocationId"] for a in answers(conn)] == ["fast"] and conn.acks() == []
    handler.gate.set()
    await settle()
    assert sorted(a["invocationId"] for a in answers(conn)) == ["fast", "slow"] and conn.acks() == [(1, True, None)]


async def test_past_the_limit_an_invocation_is_refused_not_queued():
    handler = Gated()
    conn = Conn(events=handled(handler)).open()
    for i in range(MAX_INVOCATIONS_IN_FLIGHT + 1):
        conn.send(invoke(str(i), data=str(i), dataType="text"))
    await settle()
    assert len(handler.got) == MAX_INVOCATIONS_IN_FLIGHT  # the one past the limit never reached the handler
    [refused] = answers(conn)
    assert error_of(refused) == (str(MAX_INVOCATIONS_IN_FLIGHT), False, "BadRequest")
    assert f"{MAX_INVOCATIONS_IN_FLIGHT} invocations in flight" in refused["error"]["message"]
    conn.send({"type": "cancelInvocation", "invocationId": "0"})  # a slot frees
    conn.send(invoke("again"))
    await settle()
    assert len(handler.got) == MAX_INVOCATIONS_IN_FLIGHT + 1 and len(answers(conn)) == 1
    handler.gate.set()
    await settle()
    assert len(answers(conn)) == 1 + MAX_INVOCATIONS_IN_FLIGHT  # all but the cancelled one answered


async def test_an_id_in_flight_cannot_be_used_again_until_it_is_answered():
    handler = Gated()
    conn = Conn(events=handled(handler)).open()
    conn.send(invoke("same", dataType="text", data="first"))
    conn.send(invoke("same", dataType="text", data="second"))
    await settle()
    assert [error_of(a) for a in answers(conn)] == [("same", False, "BadRequest")]
    assert "already in flight" in answers(conn)[0]["error"]["message"] and len(handler.got) == 1
    handler.gate.set()
    await settle()
    conn.send(invoke("same", dataType="text", data="third"))  # answered: the id is free again
    await settle()
    assert [a.get("data") for a in answers(conn)[1:]] == ["done first", "done third"]


async def test_cancel_invocation_cancels_the_handler_and_nothing_is_sent():
    handler = Gated()
    conn = Conn(events=handled(handler)).open()
    conn.send(invoke("a", dataType="text", data="a"))
    conn.send(invoke("b", dataType="text", data="b"))
    await settle()
    conn.send({"type": "cancelInvocation", "invocationId": "a"})
    conn.send({"type": "cancelInvocation", "invocationId": "never-started"})  # ignored
    await settle()
    assert handler.cancelled == 1 and answers(conn) == []
    handler.gate.set()
    await settle()
    assert [a["invocationId"] for a in answers(conn)] == ["b"]
    conn.send({"type": "cancelInvocation", "invocationId": "b"})  # already answered: ignored
    assert conn.closes() == [] and len(answers(conn)) == 1


@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
async def test_losing_the_socket_cancels_every_invocation(subprotocol):
    handler = Gated()
    conn = Conn(subprotocol, events=handled(handler)).open()
    for i in range(3):
        conn.send(invoke(str(i), dataType="text", data=str(i)))
    await settle()
    conn.socket = "gone"
    conn.lost()
    await settle()
    assert handler.cancelled == 3 and answers(conn) == []


async def test_an_answer_after_the_socket_closed_is_not_sent():
    handler = Gated()
    conn = Conn(events=handled(handler)).open()
    conn.send(invoke())
    await settle()
    conn.socket = "closing"
    handler.gate.set()
    await settle()
    assert answers(conn) == []


# --- the CloudEvents request and its answer ---------------------------------------------------------------------
def test_an_invocation_reaches_an_upstream_as_the_user_event_with_its_id():
    ctx = EventContext("chat", "conn-1", "ann", JSON_V1)
    headers, body = invocation(ctx, "getTime", Payload(DataType.JSON, b'{"tz":"UTC"}'), "42", ["k"], "host")
    assert headers["ce-type"] == "azure.webpubsub.user.getTime" and headers["ce-eventName"] == "getTime"
    assert headers["ce-invocationId"] == "42" and headers["Content-Type"] == "application/json; charset=utf-8"
    assert body == b'{"tz":"UTC"}'
    headers, body = invocation(ctx, "ping", None, "43", ["k"], "host")
    assert headers["Content-Type"] == "application/octet-stream" and body == b""


@pytest.mark.parametrize(("status", "body", "name", "message"), [
    (400, b"  no such order \n", "BadRequest", "no such order"),
    (401, b"", "Forbidden", "The event handler for 'e' refused the invocation (401)."),
    (404, "é".encode() * 3000, "NotFound", "é" * 1024),
    (500, b"stack trace", "InternalServerError", "The event handler for 'e' failed (500)."),
    (302, b"elsewhere", "InternalServerError", "The event handler for 'e' failed (302)."),
])
def test_an_upstreams_error_status_is_read_as_the_clients_error(status, body, name, message):
    with pytest.raises(InvocationFailed) as failed:
        invocation_reply(status, {}, body, "e")
    assert (failed.value.name, failed.value.message) == (name, message)


def test_an_upstreams_answer_is_read_as_a_user_events():
    reply = invocation_reply(200, {"content-type": "application/json", "ce-connectionstate": "s"}, b'{"a":1}', "e")
    assert reply == EventReply(Payload(DataType.JSON, b'{"a":1}'), "s")
    assert json.loads(reply.payload.data) == {"a": 1}
    assert invocation_reply(204, {}, b"", "e") == EventReply(None, None)
