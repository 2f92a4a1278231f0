"""Group streams (fastpush.streams) through a session, without sockets: what the publisher is answered
(streamAck, streamNack, streamClosed, as client-spec §3.6 says) and what the group is sent (each an
ops.SendToGroup carrying its `stream`), for starts, fragments in and out of order, keepalives, ends,
idle timeouts, the limits, a broker failure, and the session's end or recovery."""
from __future__ import annotations

import asyncio

import pytest

from fastpush import ops
from fastpush.broker.errors import BrokerUnavailable
from fastpush.protocol.json_protocol import JSON_RELIABLE_V1, JSON_V1, PROTOBUF_V1, StreamError, StreamInfo
from fastpush.protocol.payload import DataType, Payload
from fastpush.session import OPCODE_BINARY
from tests.helpers import eventually
from tests.unit.test_session import SEND_ANY, Conn, Frame
from tests.webpubsub_proto import Downstream


def start(stream_id="s1", group="g", **stream) -> dict:
    return {"type": "sendToGroup", "group": group, "stream": {"streamId": stream_id, **stream}}


def data(seq, text="x", stream_id="s1") -> dict:
    return {"type": "streamData", "streamId": stream_id, "streamSequenceId": seq, "dataType": "text", "data": text}


def answers(conn: Conn) -> list[tuple]:
    """The publisher's stream answers, in short, and forgotten once read."""
    out = []
    for m in conn.messages():
        if m["type"] == "streamAck":
            out.append(("ack", m["streamId"], m["expectedSequenceId"]))
        elif m["type"] == "streamNack":
            out.append(("nack", m["streamId"], m["name"], m["expectedSequenceId"]))
        elif m["type"] == "streamClosed":
            out.append(("closed", m["streamId"], m["error"]["name"] if "error" in m else None))
        else:
            out.append((m["type"],))
    conn.log.clear()
    return out


def sent(conn: Conn) -> list[tuple]:
    """What went to the group: (stream id, sequence id, end, error name, data), and forgotten."""
    out = []
    for op in conn.node.submitted:
        assert isinstance(op, ops.SendToGroup) and op.stream is not None
        info = op.stream
        out.append((info.stream_id, info.sequence_id, info.end_of_stream, info.error and info.error.name,
                    op.payload.data.decode()))
    conn.node.submitted.clear()
    return out


async def turn() -> None:
    """Let the acks of this turn go (one per stream, batched)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@pytest.mark.parametrize("subprotocol", [JSON_V1, JSON_RELIABLE_V1])
async def test_a_stream_opens_publishes_each_fragment_in_order_and_ends(subprotocol):
    conn = Conn(subprotocol, roles=[SEND_ANY]).open()
    conn.send(start())
    assert answers(conn) == [("ack", "s1", 1)]
    for seq in (1, 2, 3):
        conn.send(data(seq, f"part{seq}"))
    await turn()
    assert answers(conn) == [("ack", "s1", 4)]  # one ack for the three: batched per turn
    conn.send({"type": "streamEnd", "streamId": "s1"})
    assert answers(conn) == [("closed", "s1", None)]
    assert sent(conn) == [("s1", 1, False, None, "part1"), ("s1", 2, False, None, "part2"),
                          ("s1", 3, False, None, "part3"), ("s1", 4, True, None, "")]
    conn.send(data(4))
    assert answers(conn) == [("closed", "s1", "StreamNotFound")]
    conn.send(start())  # an ended stream's id may be used again
    assert answers(conn) == [("ack", "s1", 1)]


async def test_each_fragment_goes_as_a_group_send_of_the_publisher():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(start(noEcho=None))
    conn.send({**start("s2"), "noEcho": True})
    conn.send({"type": "streamData", "streamId": "s1", "streamSequenceId": 1, "dataType": "json", "data": {"a": 1},
               "metadata": {"k": "v"}})
    conn.send(data(1, stream_id="s2"))
    one, two = conn.node.submitted
    assert (one.hub, one.group, one.from_user_id, one.excluded) == ("h", "g", "ann", ())
    assert one.payload == Payload(DataType.JSON, b'{"a":1}', (("k", "v"),))
    assert one.stream == StreamInfo("s1", 1)
    assert two.excluded == ("c1",)  # noEcho: the publisher hears none of its stream


async def test_a_duplicate_is_acked_not_published_and_a_gap_is_nacked_and_the_stream_goes_on():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(start())
    conn.send(data(1))
    conn.send(data(2))
    await turn()
    answers(conn)
    sent(conn)
    conn.send(data(2))  # a recovered client resends what it did not see acknowledged
    await turn()
    assert answers(conn) == [("ack", "s1", 3)] and sent(conn) == []
    conn.send(data(5))
    assert answers(conn) == [("nack", "s1", "InvalidSequenceId", 3)] and sent(conn) == []
    conn.send(data(3, "three"))
    await turn()
    assert answers(conn) == [("ack", "s1", 4)] and sent(conn) == [("s1", 3, False, None, "three")]


async def test_an_end_with_the_publishers_error_reaches_the_group_as_user_error():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(start())
    conn.send({"type": "streamEnd", "streamId": "s1", "error": {"message": "gave up", "userErrorCode": "E1"}})
    (op,) = conn.node.submitted
    assert op.stream == StreamInfo("s1", 1, True, StreamError("UserError", "gave up", "E1"))
    assert answers(conn) == [("ack", "s1", 1), ("closed", "s1", None)]


async def test_a_stream_without_activity_for_its_idle_timeout_is_closed_and_keepalives_keep_it():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(start(idleTimeoutMs=200))
    for _ in range(5):  # 0.5 s of keepalives, none answered, none published
        await asyncio.sleep(0.1)
        conn.send({"type": "streamData", "streamId": "s1"})
    assert answers(conn) == [("ack", "s1", 1)] and sent(conn) == []
    assert await eventually(lambda: conn.messages(), 5.0)
    assert answers(conn) == [("closed", "s1", "IdleTimeout")]
    assert sent(conn) == [("s1", 1, True, "IdleTimeout", "")]


async def test_an_idle_timeout_is_the_services_default_without_one():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(start())
    timer = conn._streams._open["s1"].timer
    assert 299 < timer.when() - asyncio.get_running_loop().time() <= 300


async def test_streams_per_connection_are_bounded_and_a_second_start_of_an_open_id_refused():
    conn = Conn(roles=[SEND_ANY], max_streams_per_connection=2).open()
    for stream_id in ("a", "b", "c", "a"):
        conn.send(start(stream_id))
    assert answers(conn) == [("ack", "a", 1), ("ack", "b", 1), ("closed", "c", "BadRequest"),
                             ("closed", "a", "BadRequest")]
    conn.send(data(1, stream_id="a"))  # the open "a" goes on
    conn.send({"type": "streamEnd", "streamId": "b"})
    conn.send(start("c"))
    await turn()
    assert answers(conn) == [("closed", "b", None), ("ack", "c", 1), ("ack", "a", 2)]


async def test_a_stream_past_its_byte_limit_is_closed_and_the_group_told_cancelled():
    conn = Conn(roles=[SEND_ANY], max_stream_bytes=10).open()
    conn.send(start())
    conn.send(data(1, "x" * 10))
    conn.send(data(2, "y"))
    await turn()
    assert answers(conn) == [("ack", "s1", 1), ("closed", "s1", "BadRequest")]
    assert sent(conn) == [("s1", 1, False, None, "x" * 10), ("s1", 2, True, "Cancelled", "")]


async def test_a_broker_failure_closes_the_stream_with_internal_server_error():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(start())

    async def unavailable():
        raise BrokerUnavailable("Redis is unreachable.")
    conn.node.outcome = None
    conn.send(data(1))
    answers(conn)
    conn.node.outcome = unavailable()
    conn.send(data(2))
    assert await eventually(lambda: any(m["type"] == "streamClosed" for m in conn.messages()), 5.0)
    assert ("closed", "s1", "InternalServerError") in answers(conn)
    conn.send(data(3))
    assert answers(conn) == [("closed", "s1", "StreamNotFound")]


async def test_a_session_that_ends_cancels_its_streams_for_the_group():
    conn = Conn(roles=[SEND_ANY]).open()
    conn.send(start("a"))
    conn.send(start("b"))
    sent(conn)
    conn.socket = "gone"
    conn.lost()  # not reliable: the session ends
    assert sorted(sent(conn)) == [("a", 1, True, "Cancelled", ""), ("b", 1, True, "Cancelled", "")]


async def test_a_reliable_publishers_streams_wait_for_its_recovery_and_take_its_resend():
    conn = Conn(JSON_RELIABLE_V1, roles=[SEND_ANY]).open()
    conn.send(start())
    conn.send(data(1))
    conn.send(data(2))
    conn.socket = "gone"
    conn.lost()  # the session waits for its client
    assert sent(conn) == [("s1", 1, False, None, "x"), ("s1", 2, False, None, "x")]
    conn.open(resumed=True)
    for seq in (1, 2, 3):  # the SDK resends from its oldest unacknowledged fragment
        conn.send(data(seq))
    await turn()
    assert answers(conn) == [("ack", "s1", 4)]
    assert sent(conn) == [("s1", 3, False, None, "x")]


def test_a_protobuf_stream_start_is_refused_by_ack_or_dropped_never_a_close():
    """Protobuf has no stream messages: a start (field 7) is refused like any request that cannot be
    done, and the connection stays up; nothing reaches the group."""
    conn = Conn(PROTOBUF_V1, roles=[SEND_ANY]).open()
    inner = b"\x0a\x01g" + b"\x3a\x04\x0a\x02s1"
    for extra in (b"", b"\x10\x05"):  # without, then with ack_id 5
        body = inner + extra
        conn.receive(OPCODE_BINARY, Frame(b"\x0a" + bytes([len(body)]) + body))
    [(kind, opcode, data)] = conn.log
    ack = Downstream.FromString(data).ack_message
    assert (kind, opcode, ack.ack_id, ack.success, ack.error.name) == ("frame", OPCODE_BINARY, 5, False, "BadRequest")
    assert conn.closes() == [] and conn.node.submitted == []
