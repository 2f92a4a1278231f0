"""The client session without a socket (fastpush.session): frames are fed in, and what the session
asks for is recorded: frames sent, server messages delivered, close frames, operations submitted
to the node, joins and leaves on the hub, reading paused and resumed."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastpush import ops, reliable
from fastpush.auth.tokens import ClientClaims
from fastpush.broker.errors import BrokerUnavailable
from fastpush.events.dispatcher import HubEvents
from fastpush.events.model import EventFailed, EventReply, HandlerRule
from fastpush.handshake import Accept, variant_of
from fastpush.protocol.close_codes import CloseCode
from fastpush.protocol.json_protocol import JSON_RELIABLE_V1, JSON_V1, PROTOBUF_V1
from fastpush.protocol.payload import DataType, Payload
from fastpush.session import (
    ACK_REPEAT_SECONDS,
    MAX_EVENTS_IN_FLIGHT,
    OPCODE_BINARY,
    OPCODE_CONTINUATION,
    OPCODE_TEXT,
    ClientSession,
    ConnectionSettings,
)
from tests.webpubsub_proto import Downstream, Upstream

REPO = Path(__file__).resolve().parents[2]
SEND_ANY, JOIN_ANY = "webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"


@dataclass
class Frame:
    """A client data frame, as picows' WSFrame shows it to the session."""

    payload: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False

    @property
    def payload_size(self) -> int:
        return len(self.payload)

    def get_payload_as_bytes(self) -> bytes:
        return self.payload


class FakeNode:
    def __init__(self):
        self.submitted: list[object] = []
        self.outcome: object = None  # what submit returns: None (one node), or an awaitable (a cluster)

    def submit(self, op):
        self.submitted.append(op)
        return self.outcome


class FakeHub:
    def __init__(self, events: HubEvents | None = None):
        self.name = "h"
        self.events = events
        self.slow_client_closes = 0
        self.connections: list[object] = []
        self.joined: list[str] = []
        self.left: list[str] = []
        self.join_outcome: object = None

    def add_connection(self, conn, groups=()):
        self.connections.append(conn)
        for group in groups:
            self.join(conn, group)

    def remove_connection(self, conn) -> bool:
        if conn not in self.connections:
            return False
        self.connections.remove(conn)
        conn.groups = frozenset()
        return True

    def join(self, conn, group):
        self.joined.append(group)
        conn.groups = {*conn.groups, group}
        return self.join_outcome

    def leave(self, conn, group):
        self.left.append(group)
        conn.groups = set(conn.groups) - {group}

    def serve_last_values(self, conn):
        pass


class Conn(ClientSession):
    """The compiled Connection's fields, and a socket that records what the session asks of it."""

    def __init__(self, subprotocol: str | None = JSON_V1, *, roles=(), groups=(), raw_send_group=None,
                 raw_no_echo=False, repeat_acks=False, events: HubEvents | None = None, **settings):
        variant = variant_of(subprotocol)
        self.connection_id, self.user_id, self.hub = "c1", "ann", "h"
        self.subprotocol, self.variant = subprotocol, variant
        self.groups = self.roles = frozenset()
        self.sequence_id = self.acked_sequence_id = self.replay_bytes = self.resend_next = self.unsent_from = 0
        self.replay, self.replay_overflowed = None, False
        self.replay_max_messages = self.replay_max_bytes = 0
        self.keep_session, self.close_reason = False, None
        self.socket = "none"  # none, open, closing (close frame sent), gone
        self.log: list[tuple] = []  # everything asked of the socket side, in order
        self.node, self.hub_ = FakeNode(), FakeHub(events)
        accept = Accept("h", subprotocol, variant, ClientClaims("ann", tuple(roles), tuple(groups)),
                        raw_send_group, raw_no_echo, repeat_acks=repeat_acks, address="10.0.0.7")
        self._init_session(self.node, self.hub_, accept, ConnectionSettings(**settings), None)

    # the compiled base
    @property
    def is_open(self):
        return self.socket == "open"

    def send_frame(self, opcode, payload):
        if not self.is_open:
            return False
        self.log.append(("frame", opcode, payload))
        return True

    def flush(self):
        self.log.append(("flush",))

    def discard_pending(self):
        self.log.append(("discard",))

    def acknowledge(self, sequence_id):
        self.log.append(("acknowledge", sequence_id))

    def resend_unacknowledged(self, max_queued):
        self.log.append(("resend", max_queued))
        return True

    def mark_unsent(self):
        self.log.append(("mark_unsent",))

    # the socket side
    @property
    def is_lost(self):
        return self.socket in ("none", "gone")

    def deliver(self, payload):
        self.log.append(("deliver", payload))

    def send_close(self, code, reason):
        self.log.append(("close", int(code), reason))
        self.socket = "closing"

    def drop_socket(self):
        self.log.append(("drop",))
        self.socket = "gone"

    def pause_reading(self):
        self.log.append(("pause",))

    def resume_reading(self):
        self.log.append(("resume",))

    # driving it
    def open(self, resumed=False):
        self.socket = "open"
        self.opened(resumed)
        self.log.clear()
        return self

    def send(self, message: dict, opcode=OPCODE_TEXT):
        self.receive(opcode, Frame(json.dumps(message).encode()))

    def messages(self) -> list[dict]:
        """The JSON frames sent, decoded."""
        return [json.loads(entry[2]) for entry in self.log if entry[0] == "frame"]

    def acks(self) -> list[tuple[int, bool, str | None]]:
        return [(m["ackId"], m["success"], m.get("error", {}).get("name")) for m in self.messages()
                if m["type"] == "ack"]

    def closes(self) -> list[tuple[int, str]]:
        return [(entry[1], entry[2]) for entry in self.log if entry[0] == "close"]


def text(group="g", ack_id=None, data="hi", **extra):
    message = {"type": "sendToGroup", "group": group, "dataType": "text", "data": data, **extra}
    if ack_id is not None:
        message["ackId"] = ack_id
    return message


class Handler:
    """An in-process event handler whose answers a test decides; records the events it got."""

    def __init__(self):
        self.seen: list[str] = []
        self.delays: dict[str, float] = {}
        self.replies: dict[str, object] = {}
        self.gate: asyncio.Event | None = None
        self.system: list[str] = []

    async def connect(self, ctx, request):
        return None

    async def connected(self, ctx):
        self.system.append("connected")

    async def disconnected(self, ctx, reason):
        self.system.append(f"disconnected: {reason}")

    async def user_event(self, ctx, name, payload):
        self.seen.append(f"start {payload.data.decode()}")
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delays.get(payload.data.decode(), 0))
        self.seen.append(f"end {payload.data.decode()}")
        reply = self.replies.get(payload.data.decode())
        if isinstance(reply, Exception):
            raise reply
        return reply


def with_handler(handler: Handler, pattern="*") -> HubEvents:
    events = HubEvents()
    events.add(HandlerRule(pattern, ("connected", "disconnected")), handler)
    return events


async def settle(rounds=5):
    for _ in range(rounds):
        await asyncio.sleep(0)


# --- the module ------------------------------------------------------------------------------------
def test_the_session_needs_neither_picows_nor_the_compiled_module():
    """Imported with a bare `fastpush` package (its __init__ imports the whole server)."""
    code = textwrap.dedent("""
        import importlib, sys, types
        package = types.ModuleType("fastpush")
        package.__path__ = ["fastpush"]
        sys.modules["fastpush"] = package
        importlib.import_module("fastpush.session")
        importlib.import_module("fastpush.reliable")
        print(" ".join(sorted(m for m in sys.modules if m.startswith(("picows", "uvloop", "fastpush.")))))
    """)
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    modules = loaded.stdout.split()
    assert "fastpush.session" in modules
    assert not [m for m in modules if m.startswith(("picows", "uvloop")) or m in (
        "fastpush._fanout", "fastpush._fanout_py", "fastpush.fanout", "fastpush.hub", "fastpush.node",
        "fastpush.client_connection")]


# --- acks ---------------------------------------------------------------------------------------------
def test_a_send_to_group_is_submitted_then_acked():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(text("g", 1))
    assert conn.node.submitted == [ops.SendToGroup("h", "g", Payload(DataType.TEXT, b"hi"), (), None, "ann")]
    assert conn.acks() == [(1, True, None)]


def test_a_send_with_ttl_seconds_carries_when_it_expires():
    """On the wall clock: the nodes that apply it compare it with theirs (fastpush.expiry)."""
    conn = Conn(roles=[SEND_ANY]).open()
    before = time.time()
    conn.send(text("g", 1, ttlSeconds=5))
    conn.send(text("g", 2, ttlSeconds=0))
    timed, plain = conn.node.submitted
    assert before + 5 <= timed.expires_at <= time.time() + 5 and plain.expires_at == 0.0
    assert conn.acks() == [(1, True, None), (2, True, None)]


def test_no_echo_excludes_the_sender_and_no_ack_id_means_no_ack():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(text("g", noEcho=True))
    assert [op.excluded for op in conn.node.submitted] == [("c1",)]
    assert conn.log == []


def test_a_repeated_ack_id_is_answered_duplicate_and_not_done_again():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(text("g", 7))
    conn.send(text("g", 7, data="again"))
    assert len(conn.node.submitted) == 1
    assert conn.acks() == [(7, True, None), (7, False, "Duplicate")]
    assert conn.messages()[1]["error"]["message"] == "Message with ack-id: 7 has been processed."


def test_only_the_newest_ack_ids_are_remembered():
    conn = Conn(roles=[SEND_ANY], remembered_ack_ids=2).open()
    for ack_id in (1, 2, 3, 1):
        conn.send(text("g", ack_id))
    assert len(conn.node.submitted) == 4  # 1 was forgotten when 3 came
    conn.send(text("g", 3))
    assert conn.acks()[-1] == (3, False, "Duplicate")


async def test_an_ack_waits_for_the_cluster_and_a_broker_failure_is_an_error_ack():
    conn = Conn(roles=[SEND_ANY]).open()
    taken = asyncio.get_running_loop().create_future()

    async def publish():
        return await taken
    conn.node.outcome = publish()
    conn.send(text("g", 1))
    await settle()
    assert conn.acks() == []  # the broker has not taken it yet
    taken.set_result(None)
    await settle()
    assert conn.acks() == [(1, True, None)]

    async def unavailable():
        raise BrokerUnavailable("Redis is unreachable.")
    conn.node.outcome = unavailable()
    conn.send(text("g", 2))
    await settle()
    assert conn.acks()[-1] == (2, False, "InternalServerError")


def test_a_bad_request_with_an_ack_id_gets_an_error_ack_not_a_close():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send({"type": "sendToGroup", "ackId": 3, "dataType": "text", "data": "no group"})
    assert conn.acks() == [(3, False, "BadRequest")]
    assert conn.closes() == [] and conn.node.submitted == []


async def test_acks_are_repeated_for_the_python_sdk():
    conn = Conn(roles=[JOIN_ANY], repeat_acks=True).open()
    conn.send({"type": "joinGroup", "group": "g", "ackId": 1})
    assert conn.acks() == [(1, True, None)]
    await asyncio.sleep(ACK_REPEAT_SECONDS * 4)
    assert conn.acks() == [(1, True, None), (1, True, None)]


def test_nothing_is_acked_once_the_socket_is_closing():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.socket = "closing"
    conn.send(text("g", 1))
    assert conn.acks() == []


def test_a_protobuf_client_is_answered_in_binary_frames():
    conn = Conn(PROTOBUF_V1, roles=[JOIN_ANY]).open()
    request = Upstream(join_group_message={"group": "g", "ack_id": 5}).SerializeToString()
    conn.receive(OPCODE_BINARY, Frame(request))
    [(kind, opcode, data)] = conn.log
    ack = Downstream.FromString(data).ack_message
    assert (kind, opcode, ack.ack_id, ack.success, conn.hub_.joined) == ("frame", OPCODE_BINARY, 5, True, ["g"])


# --- group checks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("request_", [text("g", 1), {"type": "joinGroup", "group": "g", "ackId": 1},
                                      {"type": "leaveGroup", "group": "g", "ackId": 1}])
def test_without_the_role_it_is_forbidden(request_):
    conn = Conn(roles=["webpubsub.sendToGroup.other", "webpubsub.joinLeaveGroup.other"]).open()
    conn.send(request_)
    assert conn.acks() == [(1, False, "Forbidden")]
    assert conn.node.submitted == [] and conn.hub_.joined == [] and conn.hub_.left == []


def test_a_role_for_one_group_allows_that_group():
    conn = Conn(roles=["webpubsub.sendToGroup.g", "webpubsub.joinLeaveGroup.g"]).open()
    conn.send(text("g", 1))
    conn.send({"type": "joinGroup", "group": "g", "ackId": 2})
    assert conn.acks() == [(1, True, None), (2, True, None)]


@pytest.mark.parametrize("group", ["", "   ", "x" * 1025])
@pytest.mark.parametrize("kind", ["sendToGroup", "joinGroup", "leaveGroup"])
def test_a_bad_group_name_is_a_bad_request(kind, group):
    conn = Conn(roles=[SEND_ANY, JOIN_ANY]).open()
    conn.send({"type": kind, "group": group, "ackId": 1, "dataType": "text", "data": "x"})
    assert conn.acks() == [(1, False, "BadRequest")]
    assert "Invalid group name" in conn.messages()[0]["error"]["message"]
    assert conn.node.submitted == [] and conn.hub_.joined == [] and conn.hub_.left == []


def test_joins_stop_at_the_most_groups_allowed():
    conn = Conn(roles=[JOIN_ANY], max_groups_per_connection=2).open()
    for ack_id, group in enumerate(["a", "b", "c", "a"], 1):
        conn.send({"type": "joinGroup", "group": group, "ackId": ack_id})
    assert conn.acks() == [(1, True, None), (2, True, None), (3, False, "BadRequest"), (4, True, None)]
    assert conn.messages()[2]["error"]["message"] == "The connection is already in 2 groups, the most allowed."
    assert conn.hub_.joined == ["a", "b", "a"]  # joining a group it is in is not one more
    conn.send({"type": "leaveGroup", "group": "b", "ackId": 5})
    conn.send({"type": "joinGroup", "group": "c", "ackId": 6})
    assert conn.acks()[-2:] == [(5, True, None), (6, True, None)]


def test_join_then_send():
    conn = Conn(roles=[JOIN_ANY, SEND_ANY]).open()
    conn.send({"type": "joinGroup", "group": "g", "ackId": 1})
    conn.send(text("g", 2))
    conn.send({"type": "leaveGroup", "group": "g", "ackId": 3})
    assert conn.hub_.joined == ["g"] and conn.hub_.left == ["g"]
    assert [(op.group, op.from_user_id) for op in conn.node.submitted] == [("g", "ann")]
    assert conn.acks() == [(1, True, None), (2, True, None), (3, True, None)]


async def test_a_join_is_acked_once_the_cluster_has_it():
    conn = Conn(roles=[JOIN_ANY]).open()
    subscribed = asyncio.get_running_loop().create_future()
    conn.hub_.join_outcome = subscribed
    conn.send({"type": "joinGroup", "group": "g", "ackId": 1})
    await settle()
    assert conn.acks() == []
    subscribed.set_result(None)
    await settle()
    assert conn.acks() == [(1, True, None)]


# --- ping, sequence acks --------------------------------------------------------------------------------
def test_ping_is_answered_with_pong_and_a_sequence_ack_acknowledges():
    conn = Conn(JSON_RELIABLE_V1).open()
    conn.send({"type": "ping"})
    conn.send({"type": "sequenceAck", "sequenceId": 12})
    assert conn.log == [("frame", OPCODE_TEXT, b'{"type":"pong"}'), ("acknowledge", 12)]


def test_newer_requests_that_need_no_answer_are_ignored():
    """tests/unit/test_invocations.py has invoke and cancelInvocation."""
    conn = Conn().open()
    conn.send({"type": "invokeResponse", "invocationId": "inv-1", "success": True})
    assert conn.log == []


# --- user events ----------------------------------------------------------------------------------------
def event(name, data, ack_id=None):
    message = {"type": "event", "event": name, "dataType": "text", "data": data}
    if ack_id is not None:
        message["ackId"] = ack_id
    return message


async def test_events_reach_a_slow_handler_one_at_a_time_in_order():
    handler = Handler()
    handler.delays = {"1": 0.05, "2": 0.0, "3": 0.02}
    conn = Conn(events=with_handler(handler)).open()
    for i in (1, 2, 3):
        conn.send(event("e", str(i), i))
    assert conn.acks() == []  # nothing waits for the handler
    while len(conn.acks()) < 3:
        await asyncio.sleep(0.01)
    assert handler.seen == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]
    assert conn.acks() == [(1, True, None), (2, True, None), (3, True, None)]


async def test_an_event_reply_goes_back_through_the_fan_out_path_before_the_ack():
    handler = Handler()
    reply = Payload(DataType.TEXT, b"pong")
    handler.replies = {"x": EventReply(reply)}
    conn = Conn(events=with_handler(handler)).open()
    conn.send(event("e", "x", 1))
    await settle(20)
    assert conn.log == [("deliver", reply), ("frame", OPCODE_TEXT, b'{"type":"ack","ackId":1,"success":true}')]


async def test_a_failed_handler_is_an_internal_server_error_ack():
    handler = Handler()
    handler.replies = {"x": EventFailed("the upstream answered 500")}
    conn = Conn(events=with_handler(handler)).open()
    conn.send(event("e", "x", 1))
    await settle(20)
    assert conn.acks() == [(1, False, "InternalServerError")]


async def test_an_event_no_handler_wants_is_acked_and_a_bad_name_is_a_bad_request():
    conn = Conn(events=with_handler(Handler(), pattern="only")).open()
    conn.send(event("other", "x", 1))
    conn.send(event("9bad", "x", 2))
    assert conn.acks() == [(1, True, None), (2, False, "BadRequest")]


async def test_a_flood_of_events_pauses_reading_until_half_have_drained():
    handler = Handler()
    handler.gate = asyncio.Event()
    conn = Conn(events=with_handler(handler)).open()
    for i in range(MAX_EVENTS_IN_FLIGHT + 5):
        conn.send(event("e", str(i)))
    assert conn.log == [("pause",)]
    handler.gate.set()
    while conn._events_in_flight:
        await asyncio.sleep(0.001)
    assert conn.log == [("pause",), ("resume",)]


async def test_a_raw_client_message_is_the_message_event_and_its_reply_a_plain_frame():
    handler = Handler()
    handler.replies = {"x": EventReply(Payload(DataType.BINARY, b"\x00\x01"))}
    conn = Conn(None, events=with_handler(handler)).open()
    conn.receive(OPCODE_TEXT, Frame(b"x"))
    await settle(20)
    assert handler.seen == ["start x", "end x"]
    assert conn.log == [("frame", OPCODE_BINARY, b"\x00\x01")]


async def test_a_raw_client_whose_handler_fails_is_closed_1011():
    handler = Handler()
    handler.replies = {"x": EventFailed("down")}
    conn = Conn(None, events=with_handler(handler)).open()
    conn.receive(OPCODE_TEXT, Frame(b"x"))
    await settle(20)
    assert conn.closes() == [(1011, "The event handler for 'message' failed.")]


def test_a_raw_sender_to_a_group_submits_each_message():
    conn = Conn(None, roles=[SEND_ANY], raw_send_group="g", raw_no_echo=True).open()
    conn.receive(OPCODE_BINARY, Frame(b"\xff"))
    assert conn.node.submitted == [ops.SendToGroup("h", "g", Payload(DataType.BINARY, b"\xff"), ("c1",), None, "ann")]
    assert conn.log == []


# --- closes for protocol violations ----------------------------------------------------------------------
VIOLATIONS = [
    ("reserved bit", JSON_V1, [(OPCODE_TEXT, Frame(b"{}", rsv1=True))], CloseCode.PROTOCOL_ERROR,
     "A reserved bit is set, but no extension was negotiated."),
    ("continuation first", JSON_V1, [(OPCODE_CONTINUATION, Frame(b"{}"))], CloseCode.PROTOCOL_ERROR,
     "A continuation frame without a first fragment."),
    ("new message inside a fragmented one", JSON_V1,
     [(OPCODE_TEXT, Frame(b'{"type":', fin=False)), (OPCODE_TEXT, Frame(b"{}"))], CloseCode.PROTOCOL_ERROR,
     "A new message began before the fragmented one ended."),
    ("one frame too big", JSON_V1, [(OPCODE_TEXT, Frame(b"x" * 65))], CloseCode.MESSAGE_TOO_BIG,
     "The message is larger than 64 bytes."),
    ("fragments too big", JSON_V1,
     [(OPCODE_TEXT, Frame(b"x" * 40, fin=False)), (OPCODE_CONTINUATION, Frame(b"x" * 40))],
     CloseCode.MESSAGE_TOO_BIG, "The message is larger than 64 bytes."),
    ("binary on JSON", JSON_V1, [(OPCODE_BINARY, Frame(b"{}"))], CloseCode.UNSUPPORTED_DATA,
     "Binary frames are not supported by the json.webpubsub.azure.v1 subprotocol."),
    ("text on protobuf", PROTOBUF_V1, [(OPCODE_TEXT, Frame(b"{}"))], CloseCode.UNSUPPORTED_DATA,
     "Text frames are not supported by the protobuf.webpubsub.azure.v1 subprotocol."),
    ("not JSON", JSON_V1, [(OPCODE_TEXT, Frame(b"{nope"))], CloseCode.INVALID_PAYLOAD, None),
    ("no type", JSON_V1, [(OPCODE_TEXT, Frame(b'{"group":"g"}'))], CloseCode.INVALID_PAYLOAD,
     "A message must have a string 'type'."),
    ("bad request without an ackId", JSON_V1, [(OPCODE_TEXT, Frame(b'{"type":"joinGroup"}'))],
     CloseCode.INVALID_PAYLOAD, "'group' is required and must be a string"),
    ("raw text that is not UTF-8", None, [(OPCODE_TEXT, Frame(b"\xc3\x28"))], CloseCode.INVALID_PAYLOAD,
     "A text message that is not valid UTF-8."),
    ("raw message without a handler", None, [(OPCODE_TEXT, Frame(b"hi"))], CloseCode.INTERNAL_ERROR,
     "No event handler is configured for event 'message'."),
]


@pytest.mark.parametrize("subprotocol,frames,code,reason", [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
def test_a_protocol_violation_closes_with_its_code(subprotocol, frames, code, reason):
    conn = Conn(subprotocol, roles=[SEND_ANY, JOIN_ANY], max_message_bytes=64).open()
    for opcode, frame in frames:
        conn.receive(opcode, frame)
    [(closed_with, why)] = conn.closes()
    assert closed_with == code and (reason is None or why == reason), why
    assert (conn.close_code, conn.close_reason) == (code, why)
    assert conn.node.submitted == [] and conn.hub_.joined == []


def test_a_raw_sender_without_permission_for_its_group_is_closed_1008():
    conn = Conn(None, raw_send_group="g").open()
    conn.receive(OPCODE_TEXT, Frame(b"hi"))
    assert conn.closes() == [(1008, "No permission to send to group 'g'.")] and conn.node.submitted == []


def test_fragments_make_one_message_of_exactly_the_limit():
    conn = Conn(roles=[SEND_ANY], max_message_bytes=100).open()
    padding = 100 - len(json.dumps(text("g", 1, data="")))
    whole = json.dumps(text("g", 1, data="x" * padding)).encode()
    assert len(whole) == 100
    conn.receive(OPCODE_TEXT, Frame(whole[:20], fin=False))
    conn.receive(OPCODE_CONTINUATION, Frame(whole[20:40], fin=False))
    conn.receive(OPCODE_CONTINUATION, Frame(whole[40:]))
    assert conn.acks() == [(1, True, None)] and conn.closes() == []
    assert (conn.messages_in, conn.bytes_in) == (1, 100)


def test_a_continuation_keeps_the_type_of_its_first_fragment():
    conn = Conn().open()
    conn.receive(OPCODE_BINARY, Frame(b"{", fin=False))
    conn.receive(OPCODE_CONTINUATION, Frame(b"}"))
    assert conn.closes()[0][0] == CloseCode.UNSUPPORTED_DATA


# --- closes ----------------------------------------------------------------------------------------------
def test_a_rest_close_tells_the_client_why_then_sends_the_close_frame():
    conn = Conn().open()
    conn.close(CloseCode.NORMAL, "Closed by the server.", notify=True)
    conn.close(CloseCode.GOING_AWAY, "The server is shutting down.")
    assert conn.messages() == [{"type": "system", "event": "disconnected", "message": "Closed by the server."}]
    assert conn.closes() == [(1000, "Closed by the server.")]  # the second finds the close frame sent
    assert (conn.close_code, conn.close_reason) == (1000, "Closed by the server.")


async def test_a_close_on_a_lost_socket_ends_the_session():
    handler = Handler()
    conn = Conn(events=with_handler(handler)).open()
    conn.socket = "gone"
    conn.close(CloseCode.NORMAL, "bye")
    await settle()
    assert conn.hub_.connections == [] and handler.system == ["connected", "disconnected: bye"]


def test_the_client_closing_ends_even_a_reliable_session():
    conn = Conn(JSON_RELIABLE_V1).open()
    conn.closed_by_client(4001)
    assert (conn.keep_session, conn.close_code, conn.close_reason) == \
        (False, 4001, "The client closed the connection (4001).")


def test_a_slow_client_is_closed_1013_once_and_a_reliable_one_keeps_its_session():
    conn = Conn(JSON_RELIABLE_V1).open()
    conn.on_outbound_overflow()
    conn.on_outbound_overflow()
    assert conn.closes() == [(1013, "The client is too slow to receive its messages.")]
    assert conn.keep_session and conn.hub_.slow_client_closes == 1


def test_a_full_replay_buffer_closes_1008_and_ends_the_session():
    conn = Conn(JSON_RELIABLE_V1).open()
    conn.replay = [object()] * 3
    conn.on_replay_overflow()
    assert conn.closes() == [(1008, "The reliable message buffer is full.")] and not conn.keep_session
    away = Conn(JSON_RELIABLE_V1).open()
    away.socket = "gone"
    away.replay = []
    away.on_replay_overflow()
    assert away.hub_.connections == []  # no socket to close: the session ends at once


# --- the session's life ----------------------------------------------------------------------------------
async def test_opening_joins_the_hub_and_its_groups_and_says_connected():
    handler = Handler()
    conn = Conn(groups=["a", "b"], events=with_handler(handler))
    conn.socket = "open"
    conn.opened(False)
    await settle()
    assert conn.hub_.connections == [conn] and conn.hub_.joined == ["a", "b"] and conn.groups_to_join == ()
    assert handler.system == ["connected"]
    assert conn.log == [("discard",), ("frame", OPCODE_TEXT,
                                       b'{"type":"system","event":"connected","userId":"ann","connectionId":"c1"}')]


def test_a_raw_client_gets_no_connected_message():
    conn = Conn(None)
    conn.socket = "open"
    conn.opened(False)
    assert conn.log == []


async def test_a_reliable_session_waits_for_its_client_then_ends():
    handler = Handler()
    conn = Conn(JSON_RELIABLE_V1, events=with_handler(handler), recovery_window_seconds=0.05)
    conn.socket = "open"
    conn.opened(False)
    first = conn.reconnection_token
    conn.socket = "gone"
    conn.lost()
    assert conn.hub_.connections == [conn] and conn.keep_session  # waiting for the client

    conn.socket = "open"
    conn.log.clear()
    conn.opened(True)  # the client is back within the window
    assert conn.reconnection_token != first and conn.previous_token == first
    hello = json.loads(conn.log[1][2])
    assert hello["reconnectionToken"] == conn.reconnection_token
    # connected goes first
    assert [entry[0] for entry in conn.log] == ["discard", "frame", "flush", "mark_unsent", "resend"]
    assert conn.close_reason is None

    conn.socket = "gone"
    conn.lost()
    await asyncio.sleep(0.1)
    assert conn.hub_.connections == [] and not conn.keep_session
    assert handler.system == ["connected", "disconnected: The connection was lost."]


def test_a_session_that_is_not_reliable_ends_with_its_socket():
    conn = Conn().open()
    conn.socket = "gone"
    conn.lost()
    assert conn.hub_.connections == [] and conn.close_reason == "The connection closed."


def test_a_session_is_described_to_another_node_only_with_its_token_and_stays_until_given_up():
    conn = Conn(JSON_RELIABLE_V1, roles=[SEND_ANY], groups=["g"]).open()
    conn.sequence_id = 3
    assert conn.describe("wrong", JSON_RELIABLE_V1) is None and conn.keep_session
    assert conn.describe(conn.reconnection_token, JSON_V1) is None
    identity = reliable.decode_state(conn.describe(conn.reconnection_token, JSON_RELIABLE_V1))
    assert (identity.connection_id, identity.roles, identity.groups, identity.replay) == ("c1", [SEND_ANY], ["g"], [])
    assert conn.hub_.connections == [conn] and conn.keep_session and conn.log == []  # still here, untouched
    state = reliable.decode_state(conn.give_up())
    assert state.sequence_id == 3
    assert conn.hub_.connections == [] and not conn.keep_session
    assert conn.log == [("mark_unsent",), ("drop",)]  # what never reached the socket, noted in the state
    assert conn.describe(conn.reconnection_token, JSON_RELIABLE_V1) is None  # ended here


async def test_a_session_that_moved_here_waits_for_its_client_then_resumes_without_a_connected_event():
    handler = Handler()
    conn = Conn(JSON_RELIABLE_V1, events=with_handler(handler), groups=["g"], recovery_window_seconds=60)
    conn.keep_session = True
    conn.arrived()
    assert conn.hub_.connections == [conn] and conn.hub_.joined == ["g"] and conn._expiry is not None
    conn.socket = "open"
    conn.opened(False)
    await settle()
    assert conn.hub_.connections == [conn] and handler.system == [] and conn._expiry is None
    assert conn.close_reason is None
    # waiting, then resumed: the connected message, then the resend of everything
    assert [entry[0] for entry in conn.log] == ["mark_unsent", "discard", "frame", "flush", "mark_unsent", "resend"]
