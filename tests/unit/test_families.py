"""The newer message families of the client protocol that @azure/web-pubsub-client 1.1.0 sends, without
sockets, where they are refused: group state (not supported), and stream messages fastpush cannot
take (no permission, a bad group, a stream that is not open; tests/unit/test_group_streams.py has
streams that open; invocations: test_invocations.py). Every well-formed message gets the answer the
spec gives for a refusal, never a close and never silence where the client waits for an answer; a
malformed one still closes 1007 (or gets a BadRequest ack when it carries an ackId), as any
malformed message does.

The protobuf family has none of these messages (neither the published webpubsub.v1.proto nor the
newer one with sequence_ack and ping defines them), so there is nothing to answer there."""
from __future__ import annotations

import pytest

from fastpush.protocol.close_codes import CloseCode
from fastpush.protocol.json_protocol import JSON_RELIABLE_V1, JSON_V1
from tests.unit.test_session import JOIN_ANY, SEND_ANY, Conn

STREAM_START = {"type": "sendToGroup", "group": "g", "noEcho": False, "stream": {"streamId": "s1"}}


def stream_closed(stream_id: str, name: str) -> tuple[str, str, str]:
    return ("streamClosed", stream_id, name)


def answers(conn: Conn) -> list[tuple]:
    """What the session sent, in short: streamClosed and ack frames; and closes."""
    out: list[tuple] = []
    for message in conn.messages():
        if message["type"] == "streamClosed":
            assert set(message) == {"type", "streamId", "error"} and message["error"]["message"]
            out.append(stream_closed(message["streamId"], message["error"]["name"]))
        elif message["type"] == "ack":
            out.append(("ack", message["ackId"], message["success"], message.get("error", {}).get("name")))
        else:
            out.append((message["type"],))
    return out + [("close", code) for code, _ in conn.closes()]


# --- streaming (tests/unit/test_group_streams.py has streams that open) ---------------------------------------
def test_a_stream_start_without_permission_or_to_a_bad_group_says_so():
    conn = Conn(roles=[JOIN_ANY]).open()
    conn.send(STREAM_START)
    conn.send({**STREAM_START, "group": " ", "stream": {"streamId": "s2"}, "noEcho": True})
    assert answers(conn) == [stream_closed("s1", "Forbidden"), stream_closed("s2", "BadRequest")]
    assert conn.node.submitted == []  # nothing reaches the group


def test_a_refused_stream_start_with_an_ack_id_also_gets_the_error_ack_and_a_repeat_is_duplicate():
    conn = Conn(roles=[JOIN_ANY]).open()
    conn.send({**STREAM_START, "ackId": 4})
    conn.send({**STREAM_START, "ackId": 4})
    assert answers(conn) == [stream_closed("s1", "Forbidden"), ("ack", 4, False, "Forbidden"),
                             ("ack", 4, False, "Duplicate")]


@pytest.mark.parametrize("message", [
    {"type": "streamData", "streamId": "s1", "streamSequenceId": 1, "dataType": "text", "data": "part"},
    {"type": "streamData", "streamId": "s1", "streamSequenceId": 2, "dataType": "binary", "data": "AAE="},
    {"type": "streamData", "streamId": "s1"},  # a keepalive
    {"type": "streamEnd", "streamId": "s1"},
    {"type": "streamEnd", "streamId": "s1", "error": {"message": "gave up", "userErrorCode": "E1"}},
], ids=["text fragment", "binary fragment", "keepalive", "end", "end with an error"])
@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
def test_data_keepalive_and_end_on_a_stream_that_is_not_open_are_stream_not_found(subprotocol, message):
    conn = Conn(subprotocol, roles=[SEND_ANY]).open()
    conn.send(message)
    assert answers(conn) == [stream_closed("s1", "StreamNotFound")]
    assert conn.node.submitted == []


MALFORMED_STREAMS = [
    {**STREAM_START, "stream": "s1"},
    {**STREAM_START, "stream": {"streamId": ""}},
    {**STREAM_START, "stream": {"streamId": "s1", "idleTimeoutMs": 0}},
    {**STREAM_START, "dataType": "text", "data": "a start carries no data"},
    {"type": "streamData"},
    {"type": "streamData", "streamId": 7},
    {"type": "streamData", "streamId": "s1", "streamSequenceId": 1, "dataType": "text"},
    {"type": "streamData", "streamId": "s1", "streamSequenceId": 0, "dataType": "text", "data": "x"},
    {"type": "streamData", "streamId": "s1", "streamSequenceId": 1, "dataType": "binary", "data": "not base64!"},
    {"type": "streamEnd", "streamId": "s1", "error": "no"},
    {"type": "streamEnd", "streamId": "s1", "error": {"message": 3}},
]


@pytest.mark.parametrize("message", MALFORMED_STREAMS)
def test_a_malformed_stream_message_still_closes_1007(message):
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(message)
    assert answers(conn) == [("close", CloseCode.INVALID_PAYLOAD)]


def test_a_malformed_stream_start_with_an_ack_id_gets_a_bad_request_ack():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send({**STREAM_START, "stream": {"streamId": ""}, "ackId": 2})
    assert answers(conn) == [("ack", 2, False, "BadRequest")]


def test_a_send_to_group_with_a_null_stream_is_a_plain_send():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "hi", "stream": None, "ackId": 1})
    assert [type(op).__name__ for op in conn.node.submitted] == ["SendToGroup"]
    assert answers(conn) == [("ack", 1, True, None)]


# --- group state -------------------------------------------------------------------------------------------
GROUP_STATE = [
    {"type": "setGroupState", "group": "g", "state": {"topic": "news"}},
    {"type": "setGroupState", "group": "g"},  # clears the state
    {"type": "subscribeGroupState", "group": "g"},
    {"type": "unsubscribeGroupState", "group": "g"},
]


@pytest.mark.parametrize("message", GROUP_STATE, ids=["set", "clear", "subscribe", "unsubscribe"])
@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
def test_group_state_with_an_ack_id_gets_a_bad_request_ack(subprotocol, message):
    conn = Conn(subprotocol, roles=[JOIN_ANY, SEND_ANY]).open()
    conn.send({**message, "ackId": 9})
    assert answers(conn) == [("ack", 9, False, "BadRequest")]
    assert "not supported" in conn.messages()[0]["error"]["message"]


@pytest.mark.parametrize("message", GROUP_STATE, ids=["set", "clear", "subscribe", "unsubscribe"])
def test_group_state_without_an_ack_id_is_fire_and_forget_not_a_close(message):
    """Like any fire-and-forget request (spec §3.1): the client asked for no answer, so it gets none,
    and the connection stays open."""
    conn = Conn().open()
    conn.send(message)
    conn.send({"type": "ping"})
    assert answers(conn) == [("pong",)]


@pytest.mark.parametrize("message", [
    {"type": "subscribeGroupState"},
    {"type": "setGroupState", "group": "g", "state": ["not", "a", "map"]},
    {"type": "setGroupState", "group": "g", "state": {"n": 1}},
])
def test_malformed_group_state_closes_1007_or_is_a_bad_request_ack(message):
    conn = Conn().open()
    conn.send({**message, "ackId": 1})
    conn.send(message)
    assert answers(conn) == [("ack", 1, False, "BadRequest"), ("close", CloseCode.INVALID_PAYLOAD)]
