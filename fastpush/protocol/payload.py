"""A message body with its data type: the one shape every send path (REST, client, embedding) carries."""
from __future__ import annotations

import base64
import binascii
from array import array
from enum import Enum
from itertools import accumulate

import msgspec

__all__ = ["DataType", "Payload", "PayloadError", "UnsupportedMediaType", "payload_from_rest", "payload_from_client",
           "decode_json", "MAX_JSON_DEPTH"]

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode

# Deepest nesting of arrays and objects accepted in JSON from clients and REST callers, counting
# the outermost value as level 1 (a client frame's own object is one of them). Twice the .NET
# System.Text.Json default of 64, so whatever a .NET service accepts is accepted here, and far
# below the ~1000 levels at which msgspec's recursive decoder hits Python's recursion limit.
MAX_JSON_DEPTH = 128


class DataType(str, Enum):  # noqa: UP042 -- a StrEnum would change str(DataType.TEXT) to "text"
    TEXT = "text"
    JSON = "json"
    BINARY = "binary"
    PROTOBUF = "protobuf"


class PayloadError(ValueError):
    """The body does not match its declared type (bad JSON, bad base64, wrong content type)."""


class Payload(msgspec.Struct, frozen=True):
    """`data` is UTF-8 text for TEXT, serialized JSON for JSON, raw bytes for BINARY/PROTOBUF."""

    data_type: DataType
    data: bytes

    @property
    def is_binary(self) -> bool:
        return self.data_type is DataType.BINARY or self.data_type is DataType.PROTOBUF


_REST_TYPES = {
    "text/plain": DataType.TEXT,
    "application/json": DataType.JSON,
    "application/octet-stream": DataType.BINARY,
}


def payload_from_rest(content_type: str | None, body: bytes) -> Payload:
    """Map a REST send body to a payload; raise PayloadError (415 or 400) when it cannot be one."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    data_type = _REST_TYPES.get(media)
    if data_type is None:
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{media}': use text/plain, application/json or application/octet-stream.")
    if data_type is DataType.TEXT:
        _check_utf8(body)
    elif data_type is DataType.JSON:
        try:
            decode_json(body)
        except PayloadError as exc:
            raise PayloadError(f"Invalid JSON body: {exc}") from None
        body = body.strip()
    return Payload(data_type, body)


class UnsupportedMediaType(PayloadError):
    """The REST body's Content-Type is none of the three the service accepts."""


def payload_from_client(data_type: str | None, data: object) -> Payload:
    """Map a JSON-subprotocol `dataType`/`data` pair (dataType case-insensitive, json by default)."""
    kind = (data_type or "json").lower()
    if kind == "json":
        if data is None:
            raise PayloadError("'data' is required and must not be null for dataType json")
        return Payload(DataType.JSON, _json_encode(data))
    if not isinstance(data, str):
        raise PayloadError(f"'data' must be a string for dataType {kind}")
    if kind == "text":
        return Payload(DataType.TEXT, data.encode())
    if kind in ("binary", "protobuf"):
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError(f"'data' is not valid base64 for dataType {kind}") from None
        return Payload(DataType.BINARY if kind == "binary" else DataType.PROTOBUF, raw)
    raise PayloadError(f"Unknown dataType '{data_type}': use text, json, binary or protobuf")


def decode_json(doc: bytes) -> object:
    """Decode untrusted JSON, raising PayloadError when it is invalid or nested too deeply.

    msgspec has no depth limit of its own: it recurses until Python's recursion limit and then
    raises RecursionError (not a DecodeError), at a depth that depends on the caller's stack.
    """
    try:
        value = _json_decode(doc)
    except msgspec.DecodeError as exc:
        raise PayloadError(str(exc)) from None
    except RecursionError:
        raise _too_deep() from None
    if _deeper_than(doc, MAX_JSON_DEPTH):
        raise _too_deep()
    return value


def _too_deep() -> PayloadError:
    return PayloadError(f"arrays and objects are nested more than {MAX_JSON_DEPTH} levels deep")


# Brackets as +1 / -1 (signed chars); quotes kept to find strings; everything else deleted.
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))


def _deeper_than(doc: bytes, limit: int) -> bool:
    """Whether valid JSON `doc` nests deeper than `limit`, in C-speed passes (at worst about a
    quarter of msgspec's decoding time) rather than a walk over the decoded value.

    Few brackets cannot nest deeply (the common case). Otherwise escapes go first, so every
    quote left opens or closes a string; dropping adjacent quote pairs then leaves only strings
    that hold brackets, which are cut out before the running sum of the brackets is taken.
    """
    if doc.count(b"[") + doc.count(b"{") <= limit:
        return False
    if b"\\" in doc:
        doc = doc.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = doc.translate(_BRACKET_STEPS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    return max(accumulate(array("b", skeleton)), default=0) > limit


def _check_utf8(body: bytes) -> None:
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise PayloadError(f"text/plain body is not valid UTF-8: {exc}") from None
