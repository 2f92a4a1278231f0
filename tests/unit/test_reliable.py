"""Reliable-session bookkeeping (fastpush.reliable) without a socket: tokens and their check, the
state handed over to another node, restoring it into the compiled connection, and the resend."""
from __future__ import annotations

import msgspec
import pytest

from fastpush import fanout as _fanout
from fastpush import reliable
from fastpush.protocol.json_protocol import (
    JSON_RELIABLE_V1,
    JSON_V1,
    PROTOBUF_RELIABLE_V1,
    GroupSource,
    ServerSource,
    StreamError,
    StreamInfo,
)
from fastpush.protocol.payload import DataType, Payload
from fastpush.protocol.variants import Variant


class Kept(_fanout.Connection):
    """A compiled connection without a socket, with the session's two tokens."""

    def __init__(self, connection_id="c1", subprotocol=JSON_RELIABLE_V1, variant=Variant.JSON_RELIABLE):
        super().__init__(connection_id, "ann", "h", subprotocol, variant)
        self.keep_session = True
        self.reconnection_token = None
        self.previous_token = None


def test_the_reliable_variants_are_the_compiled_modules():
    assert reliable.RELIABLE_VARIANTS is _fanout.RELIABLE_VARIANTS
    assert [reliable.is_reliable(v) for v in range(5)] == [
        v in (Variant.JSON_RELIABLE, Variant.PROTOBUF_RELIABLE) for v in range(5)]


# --- tokens -------------------------------------------------------------------------------------------
def test_each_connection_gets_a_new_token_and_the_one_before_still_works():
    session = Kept()
    first = reliable.rotate_token(session)
    second = reliable.rotate_token(session)
    third = reliable.rotate_token(session)
    assert len({first, second, third}) == 3 and len(third) == 32
    assert (session.reconnection_token, session.previous_token) == (third, second)
    assert reliable.refusal(session, third, JSON_RELIABLE_V1) is None
    assert reliable.refusal(session, second, JSON_RELIABLE_V1) is None
    assert reliable.refusal(session, first, JSON_RELIABLE_V1) == "The reconnection token does not match the session."


@pytest.mark.parametrize("token", [None, "", "x" * 32, "été"])
def test_a_wrong_or_missing_token_is_refused(token):
    session = Kept()
    reliable.rotate_token(session)
    assert reliable.refusal(session, token, JSON_RELIABLE_V1) == "The reconnection token does not match the session."


def test_a_session_without_any_token_yet_is_refused():
    assert reliable.refusal(Kept(), None, JSON_RELIABLE_V1) == "The reconnection token does not match the session."


def test_why_a_session_cannot_be_resumed():
    session = Kept()
    token = reliable.rotate_token(session)
    assert reliable.refusal(session, token, PROTOBUF_RELIABLE_V1) == \
        f"The session speaks {JSON_RELIABLE_V1}, not {PROTOBUF_RELIABLE_V1}."
    session.replay_overflowed = True
    assert reliable.refusal(session, token, JSON_RELIABLE_V1) == \
        "The reliable message buffer overflowed; the session cannot be resumed."
    session.keep_session = False
    assert reliable.refusal(session, token, JSON_RELIABLE_V1) == "The session has ended."


# --- hand-over -----------------------------------------------------------------------------------------
SENDS = [
    (Payload(DataType.TEXT, b"one"), ServerSource()),
    (Payload(DataType.JSON, b'{"n":2}'), GroupSource("g", "bob")),
    (Payload(DataType.BINARY, b"\x00\x03"), GroupSource("g")),
    (Payload(DataType.TEXT, b"four"), GroupSource("h", "eve")),
    (Payload(DataType.TEXT, b"five"), ServerSource()),
]


def sent_to(session, sends=SENDS):
    """Deliver through the compiled fan-out: numbered and kept, as the socket is away."""
    for payload, source in sends:
        _fanout.fanout((session,), _fanout.Frames(payload, source))
    return session


def test_a_handed_over_session_comes_back_with_its_counters_and_unacknowledged_messages():
    session = sent_to(Kept())
    session.roles, session.groups = {"webpubsub.sendToGroup"}, {"g", "a"}
    session.acknowledge(2)
    data = reliable.export_state(session, "upstream-state")
    state = reliable.decode_state(data)
    assert (state.connection_id, state.user_id, state.subprotocol, state.variant) == \
        ("c1", "ann", JSON_RELIABLE_V1, Variant.JSON_RELIABLE)
    assert (state.roles, state.groups, state.connection_state) == (["webpubsub.sendToGroup"], ["a", "g"],
                                                                   "upstream-state")
    assert (state.sequence_id, state.acked_sequence_id) == (5, 2)

    adopted = Kept()
    reliable.restore(adopted, state, _fanout.Frames)
    assert (adopted.sequence_id, adopted.acked_sequence_id) == (5, 2)
    assert [(f.payload, f.source) for f in adopted.replay] == SENDS[2:]
    assert adopted.replay_bytes == session.replay_bytes == sum(len(p.data) + 64 for p, _ in SENDS[2:])
    sent_to(adopted, SENDS[:1])  # numbering goes on where it was
    assert adopted.sequence_id == 6 and len(adopted.replay) == 4


def test_a_session_with_nothing_kept_hands_over_an_empty_buffer():
    session = Kept(variant=Variant.PROTOBUF_RELIABLE, subprotocol=PROTOBUF_RELIABLE_V1)
    state = reliable.decode_state(reliable.export_state(session, None))
    adopted = Kept(variant=Variant.PROTOBUF_RELIABLE, subprotocol=PROTOBUF_RELIABLE_V1)
    reliable.restore(adopted, state, _fanout.Frames)
    assert (len(adopted.replay), adopted.replay_bytes, adopted.sequence_id, state.connection_state) == (0, 0, 0, None)


def test_a_moved_session_puts_the_holders_buffer_ahead_of_what_it_buffered_since_the_move():
    """A session that moved buffers what arrives from the move on, numbered from 1; the holder's
    state, arriving just after, goes in front and the numbers go on after the holder's."""
    holder = sent_to(Kept(), SENDS[:3])
    holder.acknowledge(1)
    identity = reliable.decode_state(reliable.export_state(holder, None, with_replay=False))
    assert (identity.replay, identity.sequence_id) == ([], 3)  # what a move starts with: no buffer
    state = reliable.decode_state(reliable.export_state(holder, None))
    moved = sent_to(Kept(), SENDS[3:])
    reliable.restore(moved, state, _fanout.Frames)
    assert (moved.sequence_id, moved.acked_sequence_id) == (5, 1)
    assert [(f.payload, f.source) for f in moved.replay] == SENDS[1:]
    assert moved.replay_bytes == sum(len(p.data) + 64 for p, _ in SENDS[1:])
    assert not moved.replay_overflowed
    moved.acknowledge(4)
    assert [(f.payload, f.source) for f in moved.replay] == SENDS[4:]


@pytest.mark.parametrize("limit", ["messages", "bytes"])
def test_a_move_whose_two_halves_pass_the_replay_limits_cannot_be_resumed(limit):
    state = reliable.decode_state(reliable.export_state(sent_to(Kept(), SENDS[:3]), None))
    moved = sent_to(Kept(), SENDS[3:])
    if limit == "messages":
        moved.replay_max_messages = 4
    else:
        moved.replay_max_bytes = sum(len(p.data) + 64 for p, _ in SENDS) - 1
    reliable.restore(moved, state, _fanout.Frames)
    assert moved.replay_overflowed


def test_the_hand_over_format_is_a_msgpack_array_in_field_order():
    """Nodes of a cluster exchange this: its layout must not change by accident."""
    session = sent_to(Kept(), SENDS[1:2])
    session.roles = {"r"}
    raw = msgspec.msgpack.decode(reliable.export_state(session, None))
    buffered = [{"data_type": "json", "data": b'{"n":2}'}, "g", "bob", 0.0, None]  # ..., expires_at (never), stream
    # ..., unsent_from, the reconnection token and the one before
    assert raw == ["c1", "ann", JSON_RELIABLE_V1, 2, ["r"], [], 1, 0, [buffered], None, 2, None, None]
    token = reliable.rotate_token(session)
    assert msgspec.msgpack.decode(reliable.export_state(session, "s"))[9:] == ["s", 2, token, None]


def test_a_hand_over_from_a_node_without_ttl_fields_still_decodes():
    """Fields were appended, with defaults: a node that is one version behind in a rolling upgrade
    is understood (its messages never expire; every number may have reached the client; no token,
    so its client cannot come back to the new node before it has reconnected once)."""
    old = msgspec.msgpack.encode(["c1", "ann", JSON_RELIABLE_V1, 2, [], [], 1, 0,
                                  [[{"data_type": "text", "data": b"x"}, None, None]], None])
    state = reliable.decode_state(old)
    assert (state.replay[0].expires_at, state.unsent_from, state.reconnection_token) == (0.0, 0, None)


def test_a_group_streams_message_moves_with_its_stream():
    """A reliable member's unacknowledged stream fragments keep their `stream` on its new node."""
    info = StreamInfo("s1", 3, True, StreamError("UserError", "gave up", "E1"))
    session = sent_to(Kept(), [(Payload(DataType.TEXT, b""), GroupSource("g", "ann", info))])
    adopted = Kept()
    reliable.restore(adopted, reliable.decode_state(reliable.export_state(session, None)), _fanout.Frames)
    assert adopted.replay[0].source == GroupSource("g", "ann", info)


def test_a_corrupt_hand_over_is_refused():
    with pytest.raises(msgspec.DecodeError):
        reliable.decode_state(b"\x93not a session")


# --- the resend ------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self, resend_next=0):
        self.resend_next = resend_next
        self.calls: list[tuple] = []

    def flush(self):
        self.calls.append(("flush",))

    def mark_unsent(self):
        self.calls.append(("mark_unsent", self.resend_next))

    def resend_unacknowledged(self, max_queued):
        self.calls.append(("resend", max_queued))
        return True


def test_a_recovery_flushes_connected_then_resends():
    session = Recorder()
    reliable.resend(session, 4096)
    assert session.calls == [("flush",), ("mark_unsent", 0), ("resend", 4096)]


def test_a_resend_the_last_socket_broke_off_starts_over():
    """The new socket got none of what the broken-off resend wrote to the old one."""
    session = Recorder(resend_next=7)
    reliable.resend(session, 4096)
    assert session.calls == [("flush",), ("mark_unsent", 7), ("resend", 4096)] and session.resend_next == 0


def test_a_drained_socket_goes_on_with_a_resend_only_when_one_is_under_way():
    idle, resending = Recorder(), Recorder(resend_next=7)
    reliable.continue_resend(idle, 100)
    reliable.continue_resend(resending, 100)
    assert (idle.calls, resending.calls) == ([], [("resend", 100)])


def test_a_plain_json_session_is_not_reliable():
    assert not reliable.is_reliable(Variant.JSON) and JSON_V1 != JSON_RELIABLE_V1
