"""The JSON subprotocol codec, without sockets."""
import json

import pytest

from fastpush.protocol.close_codes import CloseCode
from fastpush.protocol.json_protocol import (
    GroupSource, InvalidRequest, JoinGroup, Ping, ProtocolViolation, SendEvent, SendToGroup, SequenceAck,
    ServerSource, encode_ack, encode_connected, encode_disconnected, message_tail, parse_request,
)
from fastpush.protocol.payload import DataType, Payload, PayloadError, payload_from_client, payload_from_rest


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
