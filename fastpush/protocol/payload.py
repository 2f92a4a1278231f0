"""A message body with its data type (and a client's message metadata): the one shape every send
path (REST, client, embedding) carries."""
from __future__ import annotations

import base64
import binascii
import re
from array import array
from enum import Enum
from itertools import accumulate

import msgspec

__all__ = ["DataType", "Payload", "PayloadError", "UnsupportedMediaType", "payload_from_rest", "payload_from_client",
           "decode_json", "MAX_JSON_DEPTH", "Metadata", "metadata_from_client", "MAX_METADATA_BYTES",
           "MAX_METADATA_KEY_BYTES", "MAX_METADATA_VALUE_BYTES"]

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode

# Deepest nesting of arrays and objects accepted in JSON from clients and REST callers, counting
# the outermost value as level 1 (a client frame's own object is one of them). Twice the .NET
# System.Text.Json default of 64, so whatever a .NET service accepts is accepted here, and far
# below the ~1000 levels at which msgspec's recursive decoder hits Python's recursion limit.
MAX_JSON_DEPTH = 128

# Message metadata (a client's `metadata` on sendToGroup and event): string keys and values that
# go to the receivers and, as `x-webpubsub-metadata-<key>` headers, to the upstream. The limits
# are the service emulator's: a key is an HTTP header-name token of at most 256 bytes, a value at
# most 1,024 bytes, all of it at most 8 KiB; no control characters, no two keys differing only in case.
MAX_METADATA_KEY_BYTES = 256
MAX_METADATA_VALUE_BYTES = 1024
MAX_METADATA_BYTES = 8 * 1024
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
Metadata = tuple[tuple[str, str], ...]


class DataType(str, Enum):  # noqa: UP042 -- a StrEnum would change str(DataType.TEXT) to "text"
    TEXT = "text"
    JSON = "json"
    BINARY = "binary"
    PROTOBUF = "protobuf"


class PayloadError(ValueError):
    """The body does not match its declared type (bad JSON, bad base64, wrong content type)."""


class Payload(msgspec.Struct, frozen=True, omit_defaults=True):
    """`data` is UTF-8 text for TEXT, serialized JSON for JSON, raw bytes for BINARY/PROTOBUF.
    Without metadata a payload encodes (between nodes) as it did before metadata existed."""

    data_type: DataType
    data: bytes
    metadata: Metadata = ()  # (key, value) pairs, as the sending client gave them

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


def metadata_from_client(value: object) -> Metadata:
    """A client's `metadata`, checked against the limits above (PayloadError names the rule broken)."""
    if not isinstance(value, dict):
        raise PayloadError("'metadata' must be an object of strings")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    total = 0
    for key, text in value.items():
        if not isinstance(text, str):
            raise PayloadError("'metadata' values must be strings")
        if not _TOKEN.fullmatch(key) or len(key) > MAX_METADATA_KEY_BYTES:
            raise PayloadError(f"a 'metadata' key must be 1 to {MAX_METADATA_KEY_BYTES} letters, digits or "
                               "!#$%&'*+-.^_`|~ (it becomes an HTTP header name)")
        size = len(text.encode())
        if size > MAX_METADATA_VALUE_BYTES or _CONTROL.search(text):
            raise PayloadError(f"a 'metadata' value must be at most {MAX_METADATA_VALUE_BYTES} bytes of UTF-8 "
                               "without control characters")
        if key.lower() in seen:
            raise PayloadError("'metadata' keys must differ in more than case")
        seen.add(key.lower())
        total += len(key) + size
        if total > MAX_METADATA_BYTES:
            raise PayloadError(f"'metadata' must be at most {MAX_METADATA_BYTES} bytes in all")
        pairs.append((key, text))
    return tuple(pairs)


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
