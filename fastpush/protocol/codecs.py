"""The service messages of each subprotocol family behind one shape, chosen by wire variant."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import json_protocol, protobuf_protocol
from .json_protocol import Request
from .variants import Variant

__all__ = ["JSON_CODEC", "PROTOBUF_CODEC", "Codec", "codec_for"]

_TEXT, _BINARY = 0x1, 0x2


@dataclass(frozen=True, slots=True)
class Codec:
    opcode: int  # the frame type every message of this family travels in
    parse: Callable[[bytes | memoryview], Request]  # raises ProtocolViolation or InvalidRequest
    encode_ack: Callable[[int, str | None, str], bytes]  # ack id, error name (None: success), message
    encode_connected: Callable[[str, str | None, str | None], bytes]
    encode_disconnected: Callable[[str], bytes]
    encode_pong: Callable[[], bytes]


JSON_CODEC = Codec(_TEXT, json_protocol.parse_request, json_protocol.encode_ack, json_protocol.encode_connected,
                   json_protocol.encode_disconnected, json_protocol.encode_pong)
PROTOBUF_CODEC = Codec(_BINARY, protobuf_protocol.parse_upstream, protobuf_protocol.encode_ack,
                       protobuf_protocol.encode_connected, protobuf_protocol.encode_disconnected,
                       protobuf_protocol.encode_pong)
_BY_VARIANT: dict[int, Codec] = {Variant.JSON: JSON_CODEC, Variant.JSON_RELIABLE: JSON_CODEC,
                               Variant.PROTOBUF: PROTOBUF_CODEC, Variant.PROTOBUF_RELIABLE: PROTOBUF_CODEC}


def codec_for(variant: int) -> Codec | None:
    """None for raw clients, which get no service messages."""
    return _BY_VARIANT.get(variant)
