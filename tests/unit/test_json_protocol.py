"""The JSON subprotocol codec, without sockets."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpush.protocol.close_codes import CloseCode
from fastpush.protocol.json_protocol import (
    GroupSource,
    InvalidRequest,
    JoinGroup,
    Ping,
    ProtocolViolation,
    SendEvent,
    SendToGroup,
    SequenceAck,
    ServerSource,
    encode_ack,
    encode_connected,
    encode_disconnected,
    message_tail,
    parse_request,
)
from fastpush.protocol.payload import (
    MAX_JSON_DEPTH,
    DataType,
    Payload,
    PayloadError,
    _deeper_than,
    decode_json,
    payload_from_client,
    payload_from_rest,
)


def test_types_and_data_types_are_case_insensitive():
    request = parse_request(b'{"type":"SendToGroup","group":"g","dataType":"Text","data":"hi","ackId":3}')
    assert request == SendToGroup("g", 3, False, Payload(DataType.TEXT, b"hi"))


def test_json_data_is_default_and_reserialized_compactly():
    request = parse_request(b'{"type": "event", "event": "e", "data": {"a": [1, 2]}}')
    assert request == SendEvent("e", None, Payload(DataType.JSON, b'{"a":[1,2]}'))


def test_simple_requests():
    assert parse_request(b'{"type":"joinGroup","group":"g","ackId":1}') == JoinGroup("g", 1)
    assert parse_request(b'{"type":"ping"}') == Ping()
    assert parse_request(b'{"type":"sequenceAck","sequenceId":9}') == SequenceAck(9)


@pytest.mark.parametrize("frame", [b"{", b"[]", b'{"type":1}', b'{"type":"joinGroup","ackId":-1,"group":"g"}',
                                   b'{"type":"nope"}', b'{"type":"joinGroup"}'])
def test_violations_close_with_1007(frame):
    with pytest.raises(ProtocolViolation) as exc:
        parse_request(frame)
    assert exc.value.code == CloseCode.INVALID_PAYLOAD and exc.value.reason


def test_bad_request_with_ack_id_becomes_error_ack():
    with pytest.raises(InvalidRequest) as exc:
        parse_request(b'{"type":"sendToGroup","group":"g","ackId":4,"dataType":"json","data":null}')
    assert (exc.value.ack_id, exc.value.name) == (4, "BadRequest")


def test_a_send_may_carry_a_time_to_live():
    request = parse_request(b'{"type":"sendToGroup","group":"g","dataType":"text","data":"hi","ttlSeconds":300}')
    assert request == SendToGroup("g", None, False, Payload(DataType.TEXT, b"hi"), 300)
    assert parse_request(b'{"type":"sendToGroup","group":"g","data":1,"ttlSeconds":null}').ttl_seconds == 0


@pytest.mark.parametrize("ttl", [b"-1", b"301", b"1.5", b'"5"', b"true", b"[]", b"1" * 400])
def test_a_time_to_live_outside_0_to_300_is_refused(ttl):
    """With an ackId a BadRequest ack; without one the message is malformed (1007), as any other."""
    frame = b'{"type":"sendToGroup","group":"g","data":1,"ttlSeconds":%s%s}'
    with pytest.raises(InvalidRequest) as answered:
        parse_request(frame % (ttl, b',"ackId":9'))
    assert (answered.value.ack_id, answered.value.name) == (9, "BadRequest")
    assert "ttlSeconds must be an integer from 0 to 300" in answered.value.message
    with pytest.raises(ProtocolViolation) as closed:
        parse_request(frame % (ttl, b""))
    assert closed.value.code == CloseCode.INVALID_PAYLOAD


def test_service_messages():
    assert json.loads(encode_ack(1)) == {"type": "ack", "ackId": 1, "success": True}
    assert json.loads(encode_ack(2, "Forbidden", "no")) == {
        "type": "ack", "ackId": 2, "success": False, "error": {"name": "Forbidden", "message": "no"}}
    assert json.loads(encode_connected("c", None, None)) == {
        "type": "system", "event": "connected", "userId": None, "connectionId": "c"}
    assert json.loads(encode_connected("c", "u", "t"))["reconnectionToken"] == "t"
    assert json.loads(encode_disconnected("bye")) == {"type": "system", "event": "disconnected", "message": "bye"}


@pytest.mark.parametrize("payload,data", [
    (Payload(DataType.TEXT, "héllo ✓".encode()), "héllo ✓"),
    (Payload(DataType.JSON, b'{"a":1}'), {"a": 1}),
    (Payload(DataType.BINARY, b"\x00\xff"), "AP8="),
])
def test_message_envelopes(payload, data):
    server = json.loads(b"{" + message_tail(ServerSource(), payload))
    assert server == {"type": "message", "from": "server", "dataType": payload.data_type.value, "data": data}
    group = json.loads(b"{" + message_tail(GroupSource("g", "u"), payload))
    assert group["from"] == "group" and group["group"] == "g" and group["fromUserId"] == "u"


def test_rest_payloads():
    assert payload_from_rest("text/plain; charset=utf-8", b"x") == Payload(DataType.TEXT, b"x")
    assert payload_from_rest(None, b' "s" ') == Payload(DataType.JSON, b'"s"')
    assert payload_from_rest("application/octet-stream", b"\xff").is_binary
    with pytest.raises(PayloadError):
        payload_from_rest("application/json", b"{")
    with pytest.raises(PayloadError):
        payload_from_rest("text/plain", b"\xff")


def test_client_payload_errors():
    with pytest.raises(PayloadError):
        payload_from_client("binary", "***")
    with pytest.raises(PayloadError):
        payload_from_client("text", 5)


def _nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return (opener * depth + "1" + closer * depth).encode()


@pytest.mark.parametrize("sequence_id", [2**64, 2**64 + 5, 10**400 // 10**300, -1])
def test_sequence_ack_outside_uint64_is_a_violation(sequence_id):
    with pytest.raises(ProtocolViolation) as exc:
        parse_request(json.dumps({"type": "sequenceAck", "sequenceId": sequence_id}).encode())
    assert exc.value.code == CloseCode.INVALID_PAYLOAD and "sequenceId" in exc.value.reason


def test_sequence_ack_range_ends_at_uint64_max():
    assert parse_request(b'{"type":"sequenceAck","sequenceId":18446744073709551615}') == SequenceAck(2**64 - 1)
    assert parse_request(b'{"type":"sequenceAck","sequenceId":0}') == SequenceAck(0)


def test_json_depth_limit_is_exact():
    assert decode_json(_nested(MAX_JSON_DEPTH)) == json.loads(_nested(MAX_JSON_DEPTH))
    for deeper in (MAX_JSON_DEPTH + 1, 900, 10_000, 200_000):
        with pytest.raises(PayloadError, match="nested more than"):
            decode_json(_nested(deeper))
    objects = b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(PayloadError, match="nested more than"):
        decode_json(objects)


def test_brackets_inside_strings_do_not_count_as_nesting():
    openers = b"[" * MAX_JSON_DEPTH + b'"' + b"[" * 300 + b'"' + b"]" * MAX_JSON_DEPTH
    assert decode_json(openers) == json.loads(openers)
    escaped = json.dumps(["\\", '"[[[', "\\\"[[[[" * 200]).encode()
    assert decode_json(escaped) == json.loads(escaped)
    wide = json.dumps([{"k": "]]]]" * 50, "v": [1, "[[[["]} for _ in range(100)]).encode()
    assert decode_json(wide) == json.loads(wide)


def test_closers_inside_strings_do_not_hide_nesting():
    deep = b'["' + b"]" * 300 + b'",' + _nested(MAX_JSON_DEPTH) + b"]"
    with pytest.raises(PayloadError, match="nested more than"):
        decode_json(deep)
    escaped = rb'["\\", "\"' + b"]" * 300 + b'",' + _nested(MAX_JSON_DEPTH) + b"]"
    with pytest.raises(PayloadError, match="nested more than"):
        decode_json(escaped)


def test_many_shallow_containers_are_not_deep():
    wide = json.dumps([[{"a": [i]}] for i in range(5000)]).encode()
    assert decode_json(wide) == json.loads(wide)


def test_deep_client_frames_are_violations_even_with_an_ack_id():
    frame = b'{"type":"sendToGroup","group":"g","ackId":1,"data":' + _nested(MAX_JSON_DEPTH) + b"}"
    with pytest.raises(ProtocolViolation) as exc:
        parse_request(frame)
    assert exc.value.code == CloseCode.INVALID_PAYLOAD and "nested" in exc.value.reason
    within = b'{"type":"sendToGroup","group":"g","data":' + _nested(MAX_JSON_DEPTH - 1) + b"}"
    assert parse_request(within).payload.data == _nested(MAX_JSON_DEPTH - 1)


def test_deep_rest_json_bodies_are_payload_errors():
    with pytest.raises(PayloadError, match="nested more than"):
        payload_from_rest("application/json", _nested(10_000))
    assert payload_from_rest("application/json", _nested(MAX_JSON_DEPTH)).data_type is DataType.JSON


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


_tricky_text = st.text(alphabet='ab[]{}"\\:,', max_size=8)
_json_trees = st.recursive(st.none() | st.integers() | _tricky_text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3),
                           max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(_json_trees, st.integers(0, 8), st.booleans())
def test_depth_scan_agrees_with_the_decoded_value(value, limit, ascii_only):
    """Brackets, quotes and backslashes inside strings and keys never fool the byte-level scan."""
    doc = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert _deeper_than(doc, limit) == (_depth(value) > limit)
