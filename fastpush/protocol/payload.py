"""A message body with its data type: the one shape every send path (REST, client, embedding) carries."""
from __future__ import annotations

import base64
import binascii
from enum import Enum

import msgspec

__all__ = ["DataType", "Payload", "PayloadError", "UnsupportedMediaType", "payload_from_rest", "payload_from_client"]

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode


class DataType(str, Enum):
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
            _json_decode(body)
        except msgspec.DecodeError as exc:
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


def _check_utf8(body: bytes) -> None:
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise PayloadError(f"text/plain body is not valid UTF-8: {exc}") from None
