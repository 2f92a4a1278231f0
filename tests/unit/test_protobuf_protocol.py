"""fastpush's hand-written protobuf codec against Google's protobuf runtime (tests/webpubsub_proto.py)."""
from __future__ import annotations

import pytest
from google.protobuf import any_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpush.protocol.json_protocol import (
    GroupSource,
    Ignored,
    InvalidRequest,
    JoinGroup,
    LeaveGroup,
    Ping,
    ProtocolViolation,
    SendEvent,
    SendToGroup,
    SequenceAck,
    ServerSource,
)
from fastpush.protocol.payload import DataType, Payload
from fastpush.protocol.protobuf_protocol import (
    data_message_inner,
    encode_ack,
    encode_connected,
    encode_disconnected,
    encode_pong,
    parse_upstream,
    wrap_data_message,
)
from tests.webpubsub_proto import Downstream, Upstream

texts = st.text(max_size=40)
any_bytes = st.builds(lambda url, value: any_pb2.Any(type_url=url, value=value).SerializeToString(),
                      texts, st.binary(max_size=20))
ack_ids = st.none() | st.integers(0, 2**64 - 1)
payloads = st.one_of(
    st.builds(lambda t: Payload(DataType.TEXT, t.encode()), texts),
    st.builds(lambda b: Payload(DataType.BINARY, b), st.binary(max_size=40)),
    st.builds(lambda b: Payload(DataType.PROTOBUF, b), any_bytes),
    st.builds(lambda n: Payload(DataType.JSON, str(n).encode()), st.integers()),
)


def _set_data(target, payload: Payload) -> None:
    if payload.data_type is DataType.TEXT:
        target.text_data = payload.data.decode()
    elif payload.data_type is DataType.BINARY:
        target.binary_data = payload.data
    elif payload.data_type is DataType.JSON:
        target.json_data = payload.data.decode()
    else:
        target.protobuf_data.ParseFromString(payload.data)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["send", "event", "join", "leave", "seq", "ping"]), name=texts, ack=ack_ids,
       no_echo=st.booleans(), payload=payloads, seq=st.integers(0, 2**64 - 1))
def test_upstream_round_trip(kind, name, ack, no_echo, payload, seq):
    m = Upstream()
    if kind == "send":
        msg = m.send_to_group_message
        msg.group, msg.no_echo = name, no_echo
        _set_data(msg.data, payload)
        expected = SendToGroup(name, ack, no_echo, payload)
    elif kind == "event":
        msg = m.event_message
        msg.event = name
        _set_data(msg.data, payload)
        expected = SendEvent(name, ack, payload)
    elif kind in ("join", "leave"):
        msg = m.join_group_message if kind == "join" else m.leave_group_message
        msg.group = name
        expected = (JoinGroup if kind == "join" else LeaveGroup)(name, ack)
    elif kind == "seq":
        m.sequence_ack_message.sequence_id = seq
        ack, expected = None, SequenceAck(seq)
    else:
        m.ping_message.SetInParent()
        ack, expected = None, Ping()
    if ack is not None:
        msg.ack_id = ack
    assert parse_upstream(m.SerializeToString()) == expected


@given(ack=st.integers(0, 2**64 - 1), error=st.none() | st.tuples(texts, texts))
def test_ack_encoding(ack, error):
    decoded = Downstream.FromString(encode_ack(ack, *(error or ())))
    assert decoded.ack_message.ack_id == ack and decoded.ack_message.success == (error is None)
    if error:
        assert (decoded.ack_message.error.name, decoded.ack_message.error.message) == error


@given(cid=texts, user=st.none() | texts, token=st.none() | texts, reason=texts)
def test_system_messages(cid, user, token, reason):
    connected = Downstream.FromString(encode_connected(cid, user, token)).system_message.connected_message
    assert (connected.connection_id, connected.user_id, connected.reconnection_token) == (cid, user or "", token or "")
    assert Downstream.FromString(encode_disconnected(reason)).system_message.disconnected_message.reason == reason
    assert Downstream.FromString(encode_pong()).HasField("pong_message")


@given(group=st.none() | texts, payload=payloads, seq=st.none() | st.integers(0, 2**64 - 1))
def test_data_messages(group, payload, seq):
    source = GroupSource(group) if group is not None else ServerSource()
    data = Downstream.FromString(wrap_data_message(data_message_inner(source, payload), seq)).data_message
    assert getattr(data, "from") == ("group" if group is not None else "server")
    assert data.group == (group or "")
    assert data.HasField("sequence_id") == (seq is not None) and data.sequence_id == (seq or 0)
    field = data.data.WhichOneof("data")
    expected = {DataType.TEXT: "text_data", DataType.JSON: "text_data", DataType.BINARY: "binary_data",
                DataType.PROTOBUF: "protobuf_data"}[payload.data_type]
    assert field == expected
    if field == "binary_data":
        assert data.data.binary_data == payload.data
    elif field == "text_data":
        assert data.data.text_data.encode() == payload.data


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_fail_clearly(frame):
    try:
        parse_upstream(frame)
    except ProtocolViolation as exc:
        assert exc.code == 1007 and exc.reason
    except InvalidRequest as exc:
        assert exc.name == "BadRequest" and exc.message


@pytest.mark.parametrize("frame", [b"\x0a", b"\x0a\x05ab", b"\x08\x01", b"\xff" * 12, b"", b"\x62\x00"])
def test_malformed(frame):
    with pytest.raises(ProtocolViolation):
        parse_upstream(frame)


def test_bad_request_with_ack_id():
    m = Upstream()
    m.send_to_group_message.group = "g"
    m.send_to_group_message.ack_id = 5  # no data
    with pytest.raises(InvalidRequest) as exc:
        parse_upstream(m.SerializeToString())
    assert exc.value.ack_id == 5 and "data" in exc.value.message


@pytest.mark.parametrize("ack", [None, 5])
def test_a_stream_start_is_refused_not_a_close(ack):
    """SendToGroupMessage field 7 (the emulator's StreamStartInfo, no data): no protobuf schema has
    the rest of a stream, so the start is refused as a request that cannot be done."""
    inner = b"\x0a\x01g" + b"\x3a\x04\x0a\x02s1" + (b"" if ack is None else b"\x10\x05")
    frame = b"\x0a" + bytes([len(inner)]) + inner
    if ack is None:
        assert parse_upstream(frame) == Ignored("streamstart")
        return
    with pytest.raises(InvalidRequest) as exc:
        parse_upstream(frame)
    assert (exc.value.ack_id, exc.value.name) == (5, "BadRequest") and "JSON" in exc.value.message


def test_a_send_may_carry_a_time_to_live():
    m = Upstream()
    m.send_to_group_message.group = "g"
    m.send_to_group_message.data.text_data = "hi"
    m.send_to_group_message.ttl_seconds = 300
    assert parse_upstream(m.SerializeToString()) == SendToGroup("g", None, False, Payload(DataType.TEXT, b"hi"), 300)


@pytest.mark.parametrize("ack", [None, 7])
@pytest.mark.parametrize("ttl", [301, 2**32 - 1])
def test_a_time_to_live_past_300_is_refused(ack, ttl):
    m = Upstream()
    m.send_to_group_message.group = "g"
    m.send_to_group_message.data.text_data = "hi"
    m.send_to_group_message.ttl_seconds = ttl
    if ack is not None:
        m.send_to_group_message.ack_id = ack
    with pytest.raises(ProtocolViolation if ack is None else InvalidRequest) as exc:
        parse_upstream(m.SerializeToString())
    assert "ttl_seconds must be an integer from 0 to 300" in str(exc.value)


def test_a_time_to_live_of_the_wrong_wire_type_is_refused():
    inner = b"\x0a\x01g" + b"\x1a\x04\x0a\x02hi" + b"\x2a\x01x"  # field 5 length-delimited
    with pytest.raises(ProtocolViolation):
        parse_upstream(bytes([1 << 3 | 2, len(inner)]) + inner)


@pytest.mark.parametrize("ack", [None, 7])
def test_json_data_nested_too_deeply_is_refused(ack):
    m = Upstream()
    m.send_to_group_message.group = "g"
    if ack is not None:
        m.send_to_group_message.ack_id = ack
    m.send_to_group_message.data.json_data = "[" * 10_000 + "]" * 10_000
    with pytest.raises(ProtocolViolation if ack is None else InvalidRequest) as exc:
        parse_upstream(m.SerializeToString())
    assert "nested" in str(exc.value)


def test_sequence_ack_varint_beyond_uint64_is_a_violation():
    inner = b"\x08" + b"\xff" * 9 + b"\x7f"  # ten bytes holding 2**70 - 1
    with pytest.raises(ProtocolViolation) as exc:
        parse_upstream(bytes([8 << 3 | 2, len(inner)]) + inner)
    assert exc.value.code == 1007
    inner = b"\x08" + b"\xff" * 9 + b"\x01"  # 2**64 - 1
    assert parse_upstream(bytes([8 << 3 | 2, len(inner)]) + inner) == SequenceAck(2**64 - 1)
