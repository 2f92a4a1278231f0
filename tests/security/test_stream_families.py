"""The client-protocol families fastpush refuses (group streams, group state), attacked over real
sockets: a refused stream holds nothing on the server however many a client opens, never reaches
the group, its answer is bounded by what the client sent, and a malformed one closes 1007."""
from __future__ import annotations

import uuid

import pytest
import websockets

from tests.helpers import JSON_V1, connect
from tests.security.conftest import assert_still_serving

SEND_ANY = "webpubsub.sendToGroup"
JOIN_ANY = "webpubsub.joinLeaveGroup"
STREAMS = 5_000


def _hub() -> str:
    return "streams_" + uuid.uuid4().hex[:8]


async def test_thousands_of_stream_starts_hold_nothing_and_reach_no_member(server):
    """Each start is answered once with streamClosed (nothing is opened, so a later streamData on it
    is StreamNotFound), and the group hears nothing."""
    hub = _hub()
    member = await connect(server, hub, JSON_V1, roles=[JOIN_ANY])
    assert (await member.request({"type": "joinGroup", "group": "g"}))["success"]
    attacker = await connect(server, hub, JSON_V1, roles=[SEND_ANY])
    for i in range(STREAMS):
        await attacker.send({"type": "sendToGroup", "group": "g", "stream": {"streamId": f"s{i}"}})
        await attacker.send({"type": "streamData", "streamId": f"s{i}", "streamSequenceId": 1,
                             "dataType": "text", "data": "x" * 100})
    answers = [await attacker.recv() for _ in range(2 * STREAMS)]
    assert [(a["type"], a["error"]["name"]) for a in answers[:2]] == [("streamClosed", "BadRequest"),
                                                                      ("streamClosed", "StreamNotFound")]
    assert all(a["type"] == "streamClosed" for a in answers)
    await attacker.expect_silence(0.2)  # exactly one answer per message
    await member.expect_silence(0.2)  # nothing of any refused stream reached the group
    await assert_still_serving(server)


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
