"""The `json.webpubsub.azure.v1` family: parse client requests, encode service messages.

Requests are decoded to plain dicts rather than a tagged union because `type` is matched
case-insensitively (the .NET client writes `"Text"`, `"Json"`...), which msgspec's tags cannot do.
"""
from __future__ import annotations

import base64

import msgspec

from .close_codes import CloseCode
from .names import invocation_id_error, is_valid_invocation_id
from .payload import DataType, Payload, PayloadError, decode_json, metadata_from_client, payload_from_client
from .ttl import TtlError, check_ttl

__all__ = [
    "JSON_V1", "JSON_RELIABLE_V1", "PROTOBUF_V1", "PROTOBUF_RELIABLE_V1", "SUBPROTOCOLS",
    "JoinGroup", "LeaveGroup", "SendToGroup", "SendEvent", "SequenceAck", "Ping", "Invoke", "CancelInvocation",
    "Ignored", "StreamStart", "StreamMessage", "GroupState",
    "Request", "ProtocolViolation", "InvalidRequest", "InvalidInvocation", "parse_request",
    "encode_ack", "encode_connected", "encode_disconnected", "encode_pong", "encode_invoke_response",
    "encode_invoke_error",
    "encode_stream_closed", "encode_stream_ack", "encode_stream_nack", "StreamInfo", "StreamError",
    "message_tail", "ServerSource", "GroupSource",
]

JSON_V1 = "json.webpubsub.azure.v1"
JSON_RELIABLE_V1 = "json.reliable.webpubsub.azure.v1"
PROTOBUF_V1 = "protobuf.webpubsub.azure.v1"
PROTOBUF_RELIABLE_V1 = "protobuf.reliable.webpubsub.azure.v1"
SUBPROTOCOLS = (JSON_V1, JSON_RELIABLE_V1, PROTOBUF_V1, PROTOBUF_RELIABLE_V1)

_encode = msgspec.json.Encoder().encode
# ackId and sequenceId are uint64 in the protobuf schema; JSON clients get the same range, so an
# id means the same on both families and always fits the compiled connection's counters.
_MAX_UINT64 = 2**64 - 1


class JoinGroup(msgspec.Struct, frozen=True):
    group: str
    ack_id: int | None


class LeaveGroup(msgspec.Struct, frozen=True):
    group: str
    ack_id: int | None


class SendToGroup(msgspec.Struct, frozen=True):
    group: str
    ack_id: int | None
    no_echo: bool
    payload: Payload
    ttl_seconds: int = 0  # the message expires this many seconds after it is sent (0: never)


class SendEvent(msgspec.Struct, frozen=True):
    event: str
    ack_id: int | None
    payload: Payload


class SequenceAck(msgspec.Struct, frozen=True):
    sequence_id: int


class Ping(msgspec.Struct, frozen=True):
    pass


class Invoke(msgspec.Struct, frozen=True):
    """A request to the event handler whose answer comes back as an invokeResponse (target `event`,
    the only one); `payload` is None when the client sent no data."""

    invocation_id: str
    event: str
    payload: Payload | None


class CancelInvocation(msgspec.Struct, frozen=True):
    invocation_id: str


class Ignored(msgspec.Struct, frozen=True):
    """A newer request kind that needs no answer (invokeResponse: the service invokes no client)."""

    kind: str


class StreamStart(msgspec.Struct, frozen=True):
    """A sendToGroup carrying `stream` metadata: a client opening a group stream (1.1.0 SDKs);
    `idle_timeout_ms` None: the service default."""

    group: str
    stream_id: str
    ack_id: int | None
    no_echo: bool = False
    idle_timeout_ms: int | None = None


class StreamError(msgspec.Struct, frozen=True, array_like=True):
    """Why a stream ended badly: a publisher's own error (`UserError`, with its `userErrorCode`) or
    the service's (IdleTimeout, Cancelled, ...)."""

    name: str
    message: str
    user_error_code: str | None = None


class StreamMessage(msgspec.Struct, frozen=True):
    """streamData or streamEnd on a stream. streamData: a fragment (`sequence_id` and `payload`),
    or a keepalive (neither). streamEnd: `error` is the publisher's, if it gave one."""

    kind: str  # "streamdata" | "streamend"
    stream_id: str
    sequence_id: int | None = None
    payload: Payload | None = None
    error: StreamError | None = None


class StreamInfo(msgspec.Struct, frozen=True, array_like=True):
    """The `stream` of a group message that is part of a stream, as its receivers get it."""

    stream_id: str
    sequence_id: int
    end_of_stream: bool = False
    error: StreamError | None = None


class GroupState(msgspec.Struct, frozen=True):
    """setGroupState, subscribeGroupState or unsubscribeGroupState."""

    kind: str  # lower case, as matched
    group: str
    ack_id: int | None


Request = (JoinGroup | LeaveGroup | SendToGroup | SendEvent | SequenceAck | Ping | Invoke | CancelInvocation
           | Ignored | StreamStart | StreamMessage | GroupState)


class ProtocolViolation(Exception):
    """The frame cannot be understood at all: close the connection with `code` and `reason`."""

    def __init__(self, code: CloseCode, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class InvalidRequest(Exception):
    """A well-formed frame with a bad request that carries an ackId: answer with an error ack."""

    def __init__(self, ack_id: int, name: str, message: str):
        super().__init__(message)
        self.ack_id = ack_id
        self.name = name
        self.message = message


class InvalidInvocation(Exception):
    """A well-formed invoke with a bad request (target, event, data): answer with an error
    invokeResponse, as an ackId gets an error ack."""

    def __init__(self, invocation_id: str, message: str):
        super().__init__(message)
        self.invocation_id = invocation_id
        self.message = message


def parse_request(frame: bytes | memoryview) -> Request:
    """Turn one text frame into a request, or raise ProtocolViolation / InvalidRequest /
    InvalidInvocation."""
    try:
        msg = decode_json(bytes(frame))
    except PayloadError as exc:
        raise ProtocolViolation(CloseCode.INVALID_PAYLOAD, f"Invalid JSON message: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolViolation(CloseCode.INVALID_PAYLOAD, "A message must be a JSON object.")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolViolation(CloseCode.INVALID_PAYLOAD, "A message must have a string 'type'.")
    ack_id = _ack_id(msg)
    try:
        return _parse_known(kind.lower(), msg, ack_id)
    except (PayloadError, _FieldError, TtlError) as exc:
        if ack_id is None:
            raise ProtocolViolation(CloseCode.INVALID_PAYLOAD, str(exc)) from None
        raise InvalidRequest(ack_id, "BadRequest", str(exc)) from None


class _FieldError(ValueError):
    pass


def _parse_known(kind: str, msg: dict[str, object], ack_id: int | None) -> Request:
    if kind == "joingroup":
        return JoinGroup(_string(msg, "group"), ack_id)
    if kind == "leavegroup":
        return LeaveGroup(_string(msg, "group"), ack_id)
    if kind == "sendtogroup":
        no_echo = msg.get("noEcho", False)
        if not isinstance(no_echo, bool):
            raise _FieldError("'noEcho' must be a boolean")
        if msg.get("stream") is not None:
            stream_id, timeout = _stream_start(msg)
            return StreamStart(_string(msg, "group"), stream_id, ack_id, no_echo, timeout)
        ttl = msg.get("ttlSeconds")
        return SendToGroup(_string(msg, "group"), ack_id, no_echo, _payload(msg), 0 if ttl is None else check_ttl(ttl))
    if kind == "event":
        return SendEvent(_string(msg, "event"), ack_id, _payload(msg))
    if kind == "sequenceack":
        seq = msg.get("sequenceId")
        if type(seq) is not int or not 0 <= seq <= _MAX_UINT64:
            raise _FieldError("'sequenceId' must be an unsigned 64-bit integer")
        return SequenceAck(seq)
    if kind == "ping":
        return Ping()
    if kind == "invoke":
        return _invoke(msg)
    if kind == "cancelinvocation":
        return CancelInvocation(_invocation_id(msg))
    if kind == "streamdata":
        return _stream_data(msg)
    if kind == "streamend":
        return _stream_end(msg)
    if kind in ("setgroupstate", "subscribegroupstate", "unsubscribegroupstate"):
        group = _string(msg, "group")
        if kind == "setgroupstate":
            _string_map(msg, "state")
        return GroupState(kind, group, ack_id)
    if kind == "invokeresponse":
        return Ignored(kind)
    raise _FieldError(f"Unknown message type '{msg['type']}'")


def _invocation_id(msg: dict[str, object]) -> str:
    """Without a usable id nothing can be answered: the message is malformed."""
    value = _string(msg, "invocationId")
    if not is_valid_invocation_id(value):
        raise _FieldError(invocation_id_error(value))
    return value


def _invoke(msg: dict[str, object]) -> Invoke:
    invocation_id = _invocation_id(msg)
    try:
        target = msg.get("target")
        if target is not None and (not isinstance(target, str) or target.lower() != "event"):
            raise _FieldError("'target' must be 'event', the only invocation target")
        event = _string(msg, "event")
        # The SDKs send dataType and data together, or neither when the content is null.
        payload = None if msg.get("data") is None and msg.get("dataType") is None else _payload(msg)
    except (PayloadError, _FieldError) as exc:
        raise InvalidInvocation(invocation_id, str(exc)) from None
    return Invoke(invocation_id, event, payload)


# The client protocol spec's stream rules (Azure/azure-webpubsub protocols/client/client-spec.md §3.6),
# checked so that only a well-formed stream message gets a stream answer; anything else is malformed.
def _stream_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _FieldError("'streamId' is required and must be a non-empty string")
    return value


def _stream_start(msg: dict[str, object]) -> tuple[str, int | None]:
    stream = msg["stream"]
    if not isinstance(stream, dict):
        raise _FieldError("'stream' must be an object")
    timeout = stream.get("idleTimeoutMs")
    if timeout is not None and (type(timeout) is not int or not 0 < timeout <= _MAX_UINT64):
        raise _FieldError("'stream.idleTimeoutMs' must be a positive integer")
    if msg.get("data") is not None or msg.get("dataType") is not None:
        raise _FieldError("a stream start must carry no 'data' or 'dataType'")
    return _stream_id(stream.get("streamId")), timeout


def _stream_data(msg: dict[str, object]) -> StreamMessage:
    stream_id = _stream_id(msg.get("streamId"))
    fields = [msg.get(name) is not None for name in ("streamSequenceId", "dataType", "data")]
    if not any(fields):  # a keepalive
        return StreamMessage("streamdata", stream_id)
    if not all(fields):
        raise _FieldError("stream data needs all of 'streamSequenceId', 'dataType' and 'data'")
    seq = msg["streamSequenceId"]
    if type(seq) is not int or not 0 < seq <= _MAX_UINT64:
        raise _FieldError("'streamSequenceId' must be a positive 64-bit integer")
    return StreamMessage("streamdata", stream_id, seq, _payload(msg))


def _stream_end(msg: dict[str, object]) -> StreamMessage:
    stream_id = _stream_id(msg.get("streamId"))
    error = msg.get("error")
    if error is None:
        return StreamMessage("streamend", stream_id)
    if not isinstance(error, dict):
        raise _FieldError("'error' must be an object")
    for name in ("message", "userErrorCode"):
        if error.get(name) is not None and not isinstance(error[name], str):
            raise _FieldError(f"'error.{name}' must be a string")
    # The publisher's error reaches the receivers as the spec's UserError (client-spec §3.6.3).
    code = error.get("userErrorCode")
    return StreamMessage("streamend", stream_id, error=StreamError(
        "UserError", str(error.get("message") or ""), code if isinstance(code, str) else None))


def _string_map(msg: dict[str, object], field: str) -> None:
    value = msg.get(field)
    if value is not None and (not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())):
        raise _FieldError(f"'{field}' must be an object of strings")


def _ack_id(msg: dict[str, object]) -> int | None:
    ack_id = msg.get("ackId")
    if ack_id is None:
        return None
    if type(ack_id) is not int or not 0 <= ack_id <= _MAX_UINT64:
        raise ProtocolViolation(CloseCode.INVALID_PAYLOAD, "'ackId' must be an unsigned 64-bit integer.")
    return ack_id


def _string(msg: dict[str, object], field: str) -> str:
    value = msg.get(field)
    if not isinstance(value, str):
        raise _FieldError(f"'{field}' is required and must be a string")
    return value


def _payload(msg: dict[str, object]) -> Payload:
    data_type = msg.get("dataType")
    if data_type is not None and not isinstance(data_type, str):
        raise _FieldError("'dataType' must be a string")
    payload = payload_from_client(data_type, msg.get("data"))
    metadata = msg.get("metadata")
    if metadata is None:
        return payload
    return Payload(payload.data_type, payload.data, metadata_from_client(metadata))


# --- service -> client -------------------------------------------------------------------------

class _Error(msgspec.Struct):
    name: str
    message: str


class _Ack(msgspec.Struct, tag="ack", tag_field="type", omit_defaults=True, rename="camel"):
    ack_id: int
    success: bool
    error: _Error | None = None


class _Connected(msgspec.Struct, tag="system", tag_field="type", rename="camel"):
    event: str
    user_id: str | None
    connection_id: str


class _ReliableConnected(msgspec.Struct, tag="system", tag_field="type", rename="camel"):
    event: str
    user_id: str | None
    connection_id: str
    reconnection_token: str


class _Disconnected(msgspec.Struct, tag="system", tag_field="type"):
    event: str
    message: str


class _InvokeResponse(msgspec.Struct, tag="invokeResponse", tag_field="type", rename="camel"):
    invocation_id: str
    success: bool
    error: _Error


class _StreamClosed(msgspec.Struct, tag="streamClosed", tag_field="type", rename="camel", omit_defaults=True):
    stream_id: str
    error: _Error | None = None


class _StreamAck(msgspec.Struct, tag="streamAck", tag_field="type", rename="camel"):
    stream_id: str
    expected_sequence_id: int


class _StreamNack(msgspec.Struct, tag="streamNack", tag_field="type", rename="camel"):
    stream_id: str
    name: str
    message: str
    expected_sequence_id: int


def encode_ack(ack_id: int, error_name: str | None = None, message: str = "") -> bytes:
    if error_name is None:
        return _encode(_Ack(ack_id, True))
    return _encode(_Ack(ack_id, False, _Error(error_name, message)))


def encode_connected(connection_id: str, user_id: str | None, reconnection_token: str | None) -> bytes:
    if reconnection_token is None:
        return _encode(_Connected("connected", user_id, connection_id))
    return _encode(_ReliableConnected("connected", user_id, connection_id, reconnection_token))


def encode_disconnected(reason: str) -> bytes:
    return _encode(_Disconnected("disconnected", reason))


def encode_pong() -> bytes:
    return b'{"type":"pong"}'


def encode_invoke_response(invocation_id: str, payload: Payload | None) -> bytes:
    """A successful answer, with the handler's data if it gave some."""
    head = b'{"type":"invokeResponse","invocationId":' + _encode(invocation_id) + b',"success":true'
    if payload is None:
        return head + b"}"
    return head + b',"dataType":"' + payload.data_type.value.encode() + b'","data":' + _data(payload) + b"}"


def encode_invoke_error(invocation_id: str, name: str, message: str) -> bytes:
    return _encode(_InvokeResponse(invocation_id, False, _Error(name, message)))


def encode_stream_closed(stream_id: str, name: str | None = None, message: str = "") -> bytes:
    """The terminal answer on a stream (client-spec §3.6.4): without an error when it ended well."""
    return _encode(_StreamClosed(stream_id, None if name is None else _Error(name, message)))


def encode_stream_ack(stream_id: str, expected_sequence_id: int) -> bytes:
    """Every fragment below `expected_sequence_id` is accepted (1: the start is)."""
    return _encode(_StreamAck(stream_id, expected_sequence_id))


def encode_stream_nack(stream_id: str, name: str, message: str, expected_sequence_id: int) -> bytes:
    return _encode(_StreamNack(stream_id, name, message, expected_sequence_id))


class ServerSource(msgspec.Struct, frozen=True):
    """A message from the app server (REST or embedding API)."""


class GroupSource(msgspec.Struct, frozen=True):
    """A message published to a group, by a client (`from_user_id`) or the server (None)."""

    group: str
    from_user_id: str | None = None
    stream: StreamInfo | None = None  # a fragment or the end of a group stream


def message_tail(source: ServerSource | GroupSource, payload: Payload) -> bytes:
    """A data message without its opening brace, so a reliable sequenceId can be spliced in front."""
    if isinstance(source, GroupSource):
        head = b'"type":"message","from":"group","group":' + _encode(source.group)
        if source.from_user_id is not None:
            head += b',"fromUserId":' + _encode(source.from_user_id)
    else:
        head = b'"type":"message","from":"server"'
    tail = b',"dataType":"' + payload.data_type.value.encode() + b'","data":' + _data(payload)
    if payload.metadata:
        tail += b',"metadata":' + _encode(dict(payload.metadata))
    if isinstance(source, GroupSource) and source.stream is not None:
        tail += b',"stream":' + _stream_info(source.stream)
    return head + tail + b"}"


def _stream_info(info: StreamInfo) -> bytes:
    out = (b'{"streamId":' + _encode(info.stream_id) + b',"streamSequenceId":%d,"endOfStream":%s'
           % (info.sequence_id, b"true" if info.end_of_stream else b"false"))
    error = info.error
    if error is not None:
        out += b',"error":{"name":' + _encode(error.name) + b',"message":' + _encode(error.message)
        if error.user_error_code is not None:
            out += b',"userErrorCode":' + _encode(error.user_error_code)
        out += b"}"
    return out + b"}"


def _data(payload: Payload) -> bytes:
    if payload.data_type is DataType.JSON:
        return payload.data
    if payload.data_type is DataType.TEXT:
        return _encode(payload.data.decode())
    return b'"' + base64.b64encode(payload.data) + b'"'
