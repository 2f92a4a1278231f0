"""The `protobuf.webpubsub.azure.v1` family, encoded and decoded by hand (proto3 wire format).

Field numbers are the public ones (azure-webpubsub's webpubsub.v1.proto) plus the newer
sequence_ack (8), ping (9), pong (4), json_data (4) and the metadata maps (6 of SendToGroupMessage,
4 of EventMessage, 5 of DataMessage) that the official emulator's proto adds, and
SendToGroupMessage.ttl_seconds (5) of the newer client protocol.
JSON payloads go to protobuf clients as `text_data` holding the serialized JSON, as the public
docs say, so clients built from the older proto still see them.
"""
from __future__ import annotations

from .close_codes import CloseCode
from .json_protocol import (
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
from .payload import DataType, Payload, PayloadError, decode_json, metadata_from_client
from .ttl import TtlError, check_ttl

__all__ = [
    "parse_upstream", "encode_ack", "encode_connected", "encode_disconnected", "encode_pong",
    "data_message_inner", "wrap_data_message", "encode_varint", "ProtobufRequest",
]

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5
ProtobufRequest = JoinGroup | LeaveGroup | SendToGroup | SendEvent | SequenceAck | Ping | Ignored


class _Malformed(ValueError):
    pass


# --- wire primitives ---------------------------------------------------------------------------

def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return encode_varint(number << 3 | wire)


def _len_field(number: int, data: bytes) -> bytes:
    return _field(number, _WIRE_LEN) + encode_varint(len(data)) + data


def _str_field(number: int, text: str | None) -> bytes:
    return b"" if text is None else _len_field(number, text.encode())


def _varint_field(number: int, value: int) -> bytes:
    return _field(number, _WIRE_VARINT) + encode_varint(value)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= 1 << 64:
                raise _Malformed("varint larger than 64 bits")
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")


def _fields(data: bytes | memoryview) -> dict[int, int | bytes]:
    """Parse one message into {field number: last value} (ints for varints, bytes for the rest)."""
    buf = memoryview(data)
    pos = 0
    out: dict[int, int | bytes] = {}
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == _WIRE_VARINT:
            out[number], pos = _read_varint(buf, pos)
        elif wire == _WIRE_LEN:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise _Malformed("length-delimited field runs past the end")
            out[number] = bytes(buf[pos:pos + size])
            pos += size
        elif wire in (_WIRE_I64, _WIRE_I32):
            width = 8 if wire == _WIRE_I64 else 4
            if pos + width > len(buf):
                raise _Malformed("fixed-width field runs past the end")
            out[number] = bytes(buf[pos:pos + width])
            pos += width
        else:
            raise _Malformed(f"unsupported wire type {wire}")
    return out


# --- client -> service -------------------------------------------------------------------------

def parse_upstream(frame: bytes | memoryview) -> ProtobufRequest:
    """One binary frame → a request (the same request types as the JSON subprotocol)."""
    try:
        outer = _fields(frame)
        if len(outer) != 1:
            raise _Malformed("an UpstreamMessage must carry exactly one message")
        (number, body), = outer.items()
        if not isinstance(body, bytes):
            raise _Malformed("the message field must be length-delimited")
        inner = _fields(body)
    except _Malformed as exc:
        raise ProtocolViolation(CloseCode.INVALID_PAYLOAD, f"Invalid protobuf message: {exc}") from None
    ack_id = inner.get(2) if number in (1, 6, 7) else inner.get(3) if number == 5 else None
    if ack_id is not None and not isinstance(ack_id, int):
        raise ProtocolViolation(CloseCode.INVALID_PAYLOAD, "Invalid protobuf message: ack_id must be a varint")
    try:
        if number == 1 and 7 in inner:  # a stream start (the emulator's StreamStartInfo)
            # No protobuf schema has stream data, acks or closes: refused like any request that cannot
            # be done (an error ack, else nothing), as the message itself is well-formed.
            if ack_id is not None:
                raise InvalidRequest(ack_id, "BadRequest", "Group streams need a JSON subprotocol: no protobuf "
                                                           "schema has stream messages.")
            return Ignored("streamstart")
        if number == 1:
            return SendToGroup(_text(inner, 1, "group"), ack_id, bool(inner.get(4, 0)),
                               _with_metadata(_payload(inner.get(3)), body, inner, 6),
                               check_ttl(inner.get(5, 0), "ttl_seconds"))
        if number == 5:
            return SendEvent(_text(inner, 1, "event"), ack_id, _with_metadata(_payload(inner.get(2)), body, inner, 4))
        if number == 6:
            return JoinGroup(_text(inner, 1, "group"), ack_id)
        if number == 7:
            return LeaveGroup(_text(inner, 1, "group"), ack_id)
        if number == 8:
            return SequenceAck(_int(inner, 1))
        if number == 9:
            return Ping()
        raise _Malformed(f"unknown UpstreamMessage field {number}")
    except (_Malformed, PayloadError, TtlError) as exc:
        if ack_id is None:
            raise ProtocolViolation(CloseCode.INVALID_PAYLOAD, f"Invalid protobuf message: {exc}") from None
        raise InvalidRequest(ack_id, "BadRequest", str(exc)) from None


def _text(fields: dict[int, int | bytes], number: int, name: str) -> str:
    """proto3 leaves empty strings off the wire: absent means ''."""
    value = fields.get(number, b"")
    if not isinstance(value, bytes):
        raise _Malformed(f"'{name}' must be a string")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise _Malformed(f"'{name}' is not valid UTF-8") from None


def _int(fields: dict[int, int | bytes], number: int) -> int:
    value = fields.get(number, 0)
    if not isinstance(value, int):
        raise _Malformed("expected a varint")
    return value


def _payload(data: object) -> Payload:
    if not isinstance(data, bytes):
        raise _Malformed("'data' is required")
    fields = _fields(data)
    if 1 in fields:
        return Payload(DataType.TEXT, _text(fields, 1, "text_data").encode())
    if 2 in fields and isinstance(fields[2], bytes):
        return Payload(DataType.BINARY, fields[2])
    if 3 in fields and isinstance(fields[3], bytes):
        return Payload(DataType.PROTOBUF, fields[3])
    if 4 in fields:
        data = _text(fields, 4, "json_data").encode()
        try:
            decode_json(data)
        except PayloadError as exc:
            raise PayloadError(f"json_data is not valid JSON: {exc}") from None
        return Payload(DataType.JSON, data)
    raise _Malformed("'data' holds none of text_data, binary_data, protobuf_data, json_data")


def _with_metadata(payload: Payload, body: bytes, inner: dict[int, int | bytes], number: int) -> Payload:
    """The payload with the message's `metadata` map (field `number`: repeated key/value entries)."""
    if number not in inner:
        return payload
    entries: dict[str, str] = {}
    pos, view = 0, memoryview(body)
    while pos < len(view):  # every occurrence of the field, which _fields kept only the last of
        key, pos = _read_varint(view, pos)
        wire, size = key & 7, 0
        if wire == _WIRE_VARINT:
            _, pos = _read_varint(view, pos)
        elif wire == _WIRE_LEN:
            size, pos = _read_varint(view, pos)
        else:
            size = 8 if wire == _WIRE_I64 else 4
        if key >> 3 == number:
            if wire != _WIRE_LEN:
                raise _Malformed("'metadata' entries must be length-delimited")
            entry = _fields(view[pos:pos + size])
            name = _text(entry, 1, "metadata key")
            if name in entries:
                raise _Malformed("'metadata' repeats a key")
            entries[name] = _text(entry, 2, "metadata value")
        pos += size
    return Payload(payload.data_type, payload.data, metadata_from_client(entries))


# --- service -> client -------------------------------------------------------------------------

def encode_ack(ack_id: int, error_name: str | None = None, message: str = "") -> bytes:
    body = _varint_field(1, ack_id) + _varint_field(2, 1 if error_name is None else 0)
    if error_name is not None:
        body += _len_field(3, _str_field(1, error_name) + _str_field(2, message))
    return _len_field(1, body)


def encode_connected(connection_id: str, user_id: str | None, reconnection_token: str | None) -> bytes:
    connected = _str_field(1, connection_id) + _str_field(2, user_id) + _str_field(3, reconnection_token)
    return _len_field(3, _len_field(1, connected))


def encode_disconnected(reason: str) -> bytes:
    return _len_field(3, _len_field(2, _str_field(2, reason)))


def encode_pong() -> bytes:
    return _len_field(4, b"")


def _message_data(payload: Payload) -> bytes:
    number = {DataType.TEXT: 1, DataType.JSON: 1, DataType.BINARY: 2, DataType.PROTOBUF: 3}[payload.data_type]
    return _len_field(number, payload.data)


def data_message_inner(source: ServerSource | GroupSource, payload: Payload) -> bytes:
    """A DataMessage's fields without sequence_id (appended per connection for the reliable variant)."""
    if isinstance(source, GroupSource):
        head = _str_field(1, "group") + _str_field(2, source.group)
    else:
        head = _str_field(1, "server")
    metadata = b"".join(_len_field(5, _str_field(1, k) + _str_field(2, v)) for k, v in payload.metadata)
    return head + _len_field(3, _message_data(payload)) + metadata


def wrap_data_message(inner: bytes, sequence_id: int | None = None) -> bytes:
    """The DownstreamMessage around a DataMessage (the pure-Python twin of the compiled splice)."""
    if sequence_id is not None:
        inner += _varint_field(4, sequence_id)
    return _len_field(2, inner)
