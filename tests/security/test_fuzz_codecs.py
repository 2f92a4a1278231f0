"""Fuzzing the parsers that read untrusted input (issue 9, "Fuzzing in CI"), without sockets.

Each parser either returns its result or raises its one documented error; any other exception
would reach the connection or request handler as a crash (close 1011, REST 500). Bounded for
CI: a few hundred examples per target, no deadline (shared CI machines are slow and noisy).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastpush.events.cloudevents import connect_result, user_event_reply
from fastpush.events.model import ConnectResult, EventFailed, EventRejected, EventReply
from fastpush.protocol.close_codes import CloseCode
from fastpush.protocol.json_protocol import (
    CancelInvocation,
    GroupSource,
    Ignored,
    InvalidInvocation,
    InvalidRequest,
    Invoke,
    JoinGroup,
    LeaveGroup,
    Ping,
    ProtocolViolation,
    SendEvent,
    SendToGroup,
    SequenceAck,
    ServerSource,
    encode_invoke_error,
    encode_invoke_response,
    message_tail,
    parse_request,
)
from fastpush.protocol.names import is_valid_invocation_id
from fastpush.protocol.odata_filter import FilterError, compile_filter
from fastpush.protocol.payload import MAX_JSON_DEPTH, DataType, Payload, PayloadError, payload_from_rest
from fastpush.protocol.protobuf_protocol import data_message_inner, encode_varint, parse_upstream, wrap_data_message
from tests.webpubsub_proto import Downstream

UINT64_MAX = 2**64 - 1
FUZZ = settings(max_examples=500, deadline=None)
REQUEST_TYPES = (JoinGroup, LeaveGroup, SendToGroup, SendEvent, SequenceAck, Ping, Invoke, CancelInvocation, Ignored)

# --- shared strategies: JSON fragments that are almost right ------------------------------------

big_ints = st.sampled_from([0, -1, UINT64_MAX, 2**64, 2**63, -2**63 - 1, 10**4299, -10**4299]) | st.integers()
number_texts = st.sampled_from(["1e400", "-1e400", "1" * 4301, "-0", "0.0", "1E+2", "01", "1.", ".5", "NaN",
                                "Infinity", "0x10", "18446744073709551616", "18446744073709551615"])
scalars = st.none() | st.booleans() | big_ints | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


def nested_text(depth: int, kind: str) -> str:
    """JSON nested `depth` levels deep, built as text (json.dumps itself would hit the recursion limit)."""
    if kind == "array":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_texts = st.builds(nested_text, st.sampled_from([MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1])
                       | st.integers(1, 3000), st.sampled_from(["array", "object"]))
fragments = (json_values.map(lambda v: json.dumps(v)) | number_texts | deep_texts
             | st.sampled_from(['"\\ud800"', '"\\u0000"', "[", "}", "", '"unterminated', "tru", "nul"]))
KEYS = ["type", "group", "ackId", "data", "dataType", "event", "sequenceId", "noEcho", "invocationId", "target"]
TYPE_NAMES = ["joinGroup", "leaveGroup", "sendToGroup", "event", "sequenceAck", "ping", "invoke",
              "cancelInvocation", "invokeResponse", "streamData", "streamEnd", "system", "ack", "", "warp"]
type_names = st.sampled_from(TYPE_NAMES).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.lower(), name.swapcase()]))
DATA_TYPES = ["json", "text", "binary", "protobuf", "JSON", "Text", "colour", ""]


@st.composite
def json_messages(draw) -> bytes:
    """A client frame with the right keys in the wrong shapes: any key may be missing, repeated
    or hold any fragment; `type` is usually a known name in any case."""
    members = []
    if draw(st.booleans()):
        members.append(("type", json.dumps(draw(type_names))))
    for key in draw(st.lists(st.sampled_from(KEYS) | st.text(max_size=6), max_size=6)):
        if key == "dataType" and draw(st.booleans()):
            members.append((key, json.dumps(draw(st.sampled_from(DATA_TYPES)))))
        elif key in ("ackId", "sequenceId") and draw(st.booleans()):
            members.append((key, str(draw(big_ints))))
        else:
            members.append((key, draw(fragments)))
    text = "{" + ",".join(json.dumps(k) + ":" + v for k, v in members) + "}"
    return draw(mutated(text.encode()))


def mutated(data: bytes):
    """The bytes as they are, or with one byte replaced, inserted (invalid UTF-8 too) or cut off."""
    def mutate(position: int, byte: int, how: str) -> bytes:
        at = position % (len(data) + 1)
        if how == "replace" and data:
            at = min(at, len(data) - 1)
            return data[:at] + bytes([byte]) + data[at + 1:]
        if how == "insert":
            return data[:at] + bytes([byte]) + data[at:]
        return data[:at]
    return st.one_of(st.just(data), st.builds(mutate, st.integers(0, 2**16), st.integers(0, 255) | st.just(0xFF),
                                              st.sampled_from(["replace", "insert", "truncate"])))


# --- 1. client codecs ----------------------------------------------------------------------------

def check_client_request(parse, frame: bytes) -> None:
    """`parse` answers with a request or one of its two errors, and what it accepts can be framed."""
    try:
        request = parse(frame)
    except ProtocolViolation as exc:
        assert exc.code == CloseCode.INVALID_PAYLOAD and exc.reason
        return
    except InvalidRequest as exc:
        assert 0 <= exc.ack_id <= UINT64_MAX and exc.name == "BadRequest" and exc.message
        return
    except InvalidInvocation as exc:  # answered with an error invokeResponse naming the id
        assert is_valid_invocation_id(exc.invocation_id) and exc.message
        json.loads(encode_invoke_error(exc.invocation_id, "BadRequest", exc.message))
        return
    assert isinstance(request, REQUEST_TYPES)
    ack_id = getattr(request, "ack_id", None)
    assert ack_id is None or 0 <= ack_id <= UINT64_MAX
    if isinstance(request, SequenceAck):
        assert 0 <= request.sequence_id <= UINT64_MAX
    if isinstance(request, (SendToGroup, SendEvent)):
        check_framing(request.payload)
    if isinstance(request, (Invoke, CancelInvocation)):
        assert is_valid_invocation_id(request.invocation_id)
    if isinstance(request, Invoke):
        json.loads(encode_invoke_response(request.invocation_id, request.payload))


def check_framing(payload: Payload) -> None:
    """What the fan-out writes for an accepted payload is a valid message for both families."""
    for source in (ServerSource(), GroupSource("g", "u")):
        message = json.loads(b"{" + message_tail(source, payload))
        if payload.data_type is DataType.JSON:
            assert message["data"] == json.loads(payload.data)
        down = Downstream.FromString(wrap_data_message(data_message_inner(source, payload), 7))
        assert down.data_message.sequence_id == 7


@FUZZ
@given(st.binary(max_size=300))
@example(b'{"type":"sequenceAck","sequenceId":18446744073709551616}')
@example(b'{"type":"sendToGroup","group":"g","data":' + nested_text(10_000, "array").encode() + b"}")
@example(b'{"type":"sendToGroup","group":"g","ackId":1,"data":' + nested_text(10_000, "object").encode() + b"}")
@example(b'{"type":"ping","ackId":' + b"9" * 5000 + b"}")
def test_json_codec_arbitrary_bytes(frame):
    check_client_request(parse_request, frame)


@FUZZ
@given(json_messages())
def test_json_codec_structured_but_wrong(frame):
    check_client_request(parse_request, frame)


@st.composite
def protobuf_fields(draw, values) -> bytes:
    """One field on the wire: any number and wire type, a value of that type or of another."""
    number = draw(st.integers(0, 12) | st.integers(0, 2**32))
    wire = draw(st.sampled_from([0, 0, 2, 2, 2, 1, 5, 3, 4, 6, 7]))
    key = encode_varint(number << 3 | wire)
    if wire == 0:
        return key + encode_varint(draw(st.integers(0, UINT64_MAX) | st.sampled_from([2**64, 2**70 - 1, 2**80])))
    if wire == 2:
        value = draw(values)
        size = draw(st.just(len(value)) | st.integers(0, 2**40))
        return key + encode_varint(size) + value
    if wire in (1, 5):
        return key + draw(st.binary(min_size=0, max_size=8 if wire == 1 else 4))
    return key + draw(st.binary(max_size=4))


protobuf_leaves = (st.binary(max_size=16) | st.text(max_size=12).map(str.encode) | st.sampled_from(
    [b"\xff\xfe", b"\xed\xa0\x80", nested_text(10_000, "array").encode(),
     nested_text(MAX_JSON_DEPTH + 1, "object").encode(), b"{}", b"null", b"1e400"]))
protobuf_messages = st.recursive(protobuf_leaves,
                                 lambda inner: st.lists(protobuf_fields(inner), max_size=5).map(b"".join),
                                 max_leaves=8)


@st.composite
def upstream_messages(draw) -> bytes:
    """An UpstreamMessage with a known kind (1, 5-9) around a body of arbitrary fields, or with
    a well-formed body holding wrong values (huge ids, invalid UTF-8, deep json_data)."""
    kind = draw(st.sampled_from([1, 5, 6, 7, 8, 9]))
    body = draw(protobuf_messages)
    outer = encode_varint(kind << 3 | 2) + encode_varint(len(body)) + body
    return draw(mutated(outer))


@FUZZ
@given(st.binary(max_size=300))
@example(b"\x42\x0c\x08" + b"\xff" * 10 + b"\x01")  # sequence_id of 11 bytes
@example(b"\x42\x0b\x08" + b"\xff" * 9 + b"\x7f")  # sequence_id of 2**70 - 1
def test_protobuf_codec_arbitrary_bytes(frame):
    check_client_request(parse_upstream, frame)


@FUZZ
@given(upstream_messages())
@example(b"\x0a\x1c\x0a\x01g\x1a\x17\x22\x15" + b"[" * 10 + b"1" + b"]" * 10)  # json_data within the limit
def test_protobuf_codec_structured_but_wrong(frame):
    check_client_request(parse_upstream, frame)


@FUZZ
@given(st.sampled_from(["application/json", "text/plain", "application/octet-stream", None, "application/JSON; x=y"]),
       st.binary(max_size=200) | fragments.map(str.encode))
@example("application/json", nested_text(10_000, "array").encode())
def test_rest_payloads(content_type, body):
    try:
        payload = payload_from_rest(content_type, body)
    except PayloadError as exc:
        assert str(exc)
        return
    check_framing(payload)


# --- 2. OData filters ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Facts:
    connection_id: str
    user_id: str | None
    groups: frozenset[str]
    protocol: str | None


facts = st.builds(Facts, st.text(max_size=8), st.none() | st.text(max_size=8),
                  st.frozensets(st.text(max_size=6), max_size=4),
                  st.none() | st.sampled_from(["json.webpubsub.azure.v1", "protobuf.webpubsub.azure.v1", ""]))
FILTER_WORDS = ["userId", "connectionId", "protocol", "groups", "tolower", "toupper", "trim", "substring",
                "startswith", "endswith", "contains", "concat", "indexof", "length", "and", "or", "not", "in",
                "eq", "ne", "gt", "ge", "lt", "le", "true", "false", "null", "(", ")", ",", "'a'", "''''",
                "'unterminated", "0", "-1", "+7", "9223372036854775807", "-9223372036854775808",
                "9223372036854775808", "00000000000000000000001", "$", "é", "\x00", "'"]
filter_words = st.sampled_from(FILTER_WORDS).flatmap(lambda w: st.sampled_from([w, w.upper(), w.swapcase()]))
values = st.deferred(lambda: st.sampled_from(["userId", "connectionId", "protocol", "groups", "'x'", "''", "3",
                                              "-2", "null", "true"])
                     | st.builds(lambda f, args: f"{f}({', '.join(args)})",
                                 st.sampled_from(["tolower", "toupper", "trim", "substring", "startswith",
                                                  "endswith", "contains", "concat", "indexof", "length"]),
                                 st.lists(values, max_size=3)))
conditions = st.recursive(
    st.builds(lambda a, op, b: f"{a} {op} {b}", values,
              st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le", "in"]), values | st.just("('a', 'b', null)"))
    | values,
    lambda inner: st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["and", "or", "eq"]), inner)
    | inner.map(lambda c: f"not ({c})") | inner.map(lambda c: f"({c})"),
    max_leaves=8)


def deep(n: int, opener: str, core: str, closer: str) -> str:
    return opener * n + core + closer * n


def check_filter(text: str, connections: list[Facts]) -> None:
    try:
        predicate = compile_filter(text)
    except FilterError as exc:
        assert str(exc)
        return
    for connection in connections:
        assert type(predicate(connection)) is bool


@FUZZ
@given(st.text(max_size=200), st.lists(facts, max_size=3))
@example(deep(5000, "(", "userId eq 'a'", ")"), [])
@example(deep(2000, "tolower(", "userId", ")") + " eq 'a'", [])
@example("not " * 5000 + "true", [Facts("c", None, frozenset(), None)])
@example(deep(1000, "not (", "true", ")"), [])
@example("'a' in (" + ", ".join(["'x'"] * 3000) + ")", [])
def test_odata_arbitrary_text(text, connections):
    check_filter(text, connections)


@FUZZ
@given(st.lists(filter_words, max_size=25).map(" ".join) | conditions, st.lists(facts, min_size=1, max_size=3))
def test_odata_near_miss_grammar(text, connections):
    check_filter(text, connections)


# --- 3. CloudEvents replies ----------------------------------------------------------------------

statuses = st.sampled_from([200, 201, 204, 299, 300, 302, 400, 401, 404, 429, 500, 503, 599, 600, 0, -1]) \
    | st.integers(-2**31, 2**31)
header_values = st.text(max_size=20) | st.sampled_from(["application/json", "text/plain; charset=utf-8",
                                                         "application/octet-stream", "APPLICATION/JSON ;", ";", ""])
reply_headers = st.dictionaries(st.sampled_from(["content-type", "ce-connectionstate", "ce-userid"])
                                | st.text(max_size=10), header_values, max_size=3)
connect_keys = ["userId", "groups", "roles", "subprotocol"]
connect_bodies = st.builds(
    lambda members: ("{" + ",".join(json.dumps(k) + ":" + v for k, v in members) + "}").encode(),
    st.lists(st.tuples(st.sampled_from(connect_keys) | st.text(max_size=6), fragments), max_size=5))
reply_bodies = st.binary(max_size=200) | fragments.map(str.encode) | connect_bodies.flatmap(mutated)


@FUZZ
@given(statuses, reply_headers, reply_bodies)
@example(200, {}, b'{"unknown":' + nested_text(10_000, "array").encode() + b"}")
@example(200, {}, b'{"groups":["' + b"x" * 2000 + b'"],"userId":"\\u0000"}')
def test_connect_result(status, headers, body):
    try:
        result = connect_result(status, headers, body)
    except EventRejected as exc:
        assert 400 <= exc.status < 600
        return
    assert isinstance(result, ConnectResult)


@FUZZ
@given(statuses, reply_headers, reply_bodies)
@example(200, {"content-type": "application/json"}, nested_text(10_000, "array").encode())
def test_user_event_reply(status, headers, body):
    try:
        reply = user_event_reply(status, headers, body)
    except EventFailed as exc:
        assert str(exc)
        return
    assert isinstance(reply, EventReply)
    if reply.payload is not None:
        check_framing(reply.payload)
