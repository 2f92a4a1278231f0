"""Group streams and the group-state family, attacked over real sockets: streams opened and never
ended are bounded per connection and end with it, a stream holds no fragment (the memory a stream
costs does not grow with what it carries), fragments past the message limit close the connection,
a stream past its byte limit is closed, answers are bounded by what the client sent, and a
malformed message closes 1007."""
from __future__ import annotations

import collections
import sys
import uuid

import pytest
import websockets

from tests.helpers import JSON_V1, connect, eventually
from tests.security.conftest import assert_still_serving

SEND_ANY = "webpubsub.sendToGroup"
JOIN_ANY = "webpubsub.joinLeaveGroup"
STARTS = 5_000
MAX_STREAMS = 64  # the default --max-streams-per-connection


def _hub() -> str:
    return "streams_" + uuid.uuid4().hex[:8]


def _start(stream_id: str, group: str = "g") -> dict:
    return {"type": "sendToGroup", "group": group, "stream": {"streamId": stream_id}}


def _deep_size(value: object) -> int:
    """sys.getsizeof of a value and of every container and buffer it holds."""
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        return size + sum(_deep_size(k) + _deep_size(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset | collections.deque):
        return size + sum(_deep_size(v) for v in value)
    return size


def _open_streams(server, hub: str) -> list[int]:
    """How many streams each connection of `hub` holds, read on the server's loop."""
    def count() -> list[int]:
        conns = server.server.node.hub(hub).tables.connections.values()
        return [len(c._streams) if c._streams is not None else 0 for c in conns]
    return server.call(count)


async def test_thousands_of_stream_starts_open_at_most_the_limit_and_reach_no_member(server):
    """Each start is answered once: the first 64 open (streamAck), the rest are refused (streamClosed
    BadRequest) and hold nothing; a start carries no data, so the group hears nothing."""
    hub = _hub()
    member = await connect(server, hub, JSON_V1, groups=["g"])
    attacker = await connect(server, hub, JSON_V1, roles=[SEND_ANY])
    for i in range(STARTS):
        await attacker.send(_start(f"s{i}"))
    answers = [await attacker.recv() for _ in range(STARTS)]
    assert [a["type"] for a in answers[:MAX_STREAMS]] == ["streamAck"] * MAX_STREAMS
    assert {(a["type"], a["error"]["name"]) for a in answers[MAX_STREAMS:]} == {("streamClosed", "BadRequest")}
    await attacker.expect_silence(0.2)  # exactly one answer per message
    assert sorted(_open_streams(server, hub)) == [0, MAX_STREAMS]
    await member.expect_silence(0.2)
    await assert_still_serving(server)


async def test_streams_left_open_end_with_their_connections_and_the_group_is_told(server):
    """Connections that open the most streams and drop: every stream ends for the group (Cancelled)
    and the server holds none of them, nor the connections."""
    hub = _hub()
    member = await connect(server, hub, JSON_V1, groups=["g"])
    attackers = [await connect(server, hub, JSON_V1, roles=[SEND_ANY]) for _ in range(10)]
    for attacker in attackers:
        for i in range(MAX_STREAMS):
            await attacker.send(_start(f"s{i}"))
        assert [(await attacker.recv())["type"] for _ in range(MAX_STREAMS)] == ["streamAck"] * MAX_STREAMS
        await attacker.close()
    ends = [await member.recv() for _ in range(10 * MAX_STREAMS)]
    assert {(m["stream"]["endOfStream"], m["stream"]["error"]["name"]) for m in ends} == {(True, "Cancelled")}
    assert await eventually(lambda: _open_streams(server, hub) == [0])  # the member alone is left
    await assert_still_serving(server)


async def test_a_stream_holds_no_fragment_whatever_it_carries(make_server):
    """Fragments go to the group as they come: what a stream keeps is a few counters, the same after
    a megabyte as after nothing; past --max-stream-bytes the stream is closed (BadRequest to its
    publisher, Cancelled to the group) and the fragment that went over is not published."""
    server = make_server(max_stream_bytes=1_000_000)
    hub = _hub()
    member = await connect(server, hub, JSON_V1, groups=["g"])
    attacker = await connect(server, hub, JSON_V1, roles=[SEND_ANY])
    await attacker.send(_start("s"))
    assert (await attacker.recv())["type"] == "streamAck"

    def held() -> int:
        """The bytes the open stream's state holds (what its fields reach, its timer aside)."""
        conn = next(c for c in server.server.node.hub(hub).tables.connections.values() if c._streams is not None)
        (stream,) = conn._streams._open.values()
        return sum(_deep_size(getattr(stream, name)) for name in stream.__slots__ if name != "timer")
    empty = server.call(held)
    chunk = "x" * 400_000
    for seq in (1, 2, 3):
        await attacker.send({"type": "streamData", "streamId": "s", "streamSequenceId": seq, "dataType": "text",
                             "data": chunk})
        if seq == 2:
            assert [len((await member.recv())["data"]) for _ in range(2)] == [400_000, 400_000]
            assert server.call(held) < empty + 1024  # no fragment kept, no buffer grown
    end = await member.recv()  # the third fragment went over: not published, and the stream ends
    assert (end["data"], end["stream"]["endOfStream"], end["stream"]["error"]["name"]) == ("", True, "Cancelled")
    answers = [await attacker.recv()]
    while answers[-1]["type"] == "streamAck":  # acks are batched: one or two for the two fragments
        assert len(answers) <= 2
        answers.append(await attacker.recv())
    assert answers[-1]["type"] == "streamClosed" and answers[-1]["error"]["name"] == "BadRequest"
    await member.expect_silence(0.2)


async def test_a_fragment_over_the_message_limit_closes_1009_and_cancels_the_stream(make_server):
    server = make_server(max_message_bytes=64 * 1024)
    hub = _hub()
    member = await connect(server, hub, JSON_V1, groups=["g"])
    attacker = await connect(server, hub, JSON_V1, roles=[SEND_ANY])
    await attacker.send(_start("s"))
    assert (await attacker.recv())["type"] == "streamAck"
    await attacker.send({"type": "streamData", "streamId": "s", "streamSequenceId": 1, "dataType": "text",
                         "data": "x" * 70_000})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await attacker.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    end = await member.recv()
    assert end["stream"]["endOfStream"] is True and end["stream"]["error"]["name"] == "Cancelled"


async def test_a_huge_stream_id_gets_an_answer_no_larger_than_the_message(server):
    """The answer repeats the stream id (the spec names the stream it closes), so it costs at most
    what the client sent: no amplification."""
    attacker = await connect(server, _hub(), JSON_V1, roles=[SEND_ANY])
    stream_id = "s" * 512 * 1024
    message = {"type": "streamEnd", "streamId": stream_id}
    await attacker.send(message)
    answer = await attacker.recv()
    assert answer["type"] == "streamClosed" and answer["streamId"] == stream_id
    assert len(str(answer)) < len(str(message)) + 1024
    await assert_still_serving(server)


@pytest.mark.parametrize("message", [
    {"type": "sendToGroup", "group": "g", "stream": {"streamId": ""}},
    {"type": "sendToGroup", "group": "g", "stream": {"streamId": {"nested": [1, 2, 3]}}},
    {"type": "sendToGroup", "group": "g", "stream": "not an object"},
    {"type": "sendToGroup", "group": "g", "stream": {"streamId": "s", "idleTimeoutMs": -1}},
    {"type": "streamData", "streamId": "s", "streamSequenceId": -5, "dataType": "text", "data": "x"},
    {"type": "streamData", "streamId": "s", "streamSequenceId": 2 ** 70, "dataType": "text", "data": "x"},
    {"type": "streamEnd", "streamId": 42},
    {"type": "subscribeGroupState", "group": 7},
], ids=["empty-id", "object-id", "stream-not-object", "negative-timeout", "negative-sequence",
        "sequence-overflow", "numeric-id", "group-not-string"])
async def test_malformed_family_messages_close_1007(server, message):
    attacker = await connect(server, _hub(), JSON_V1, roles=[SEND_ANY])
    await attacker.send(message)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await attacker.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    await assert_still_serving(server)
