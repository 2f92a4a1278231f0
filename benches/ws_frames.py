"""The few WebSocket bytes a benchmark client writes and the upgrade request it opens with.

Client frames must be masked (RFC 6455 5.3); the key here is zero, which leaves the payload as it is, so
no byte is touched per message. The servers under test are known, so the Sec-WebSocket-Key is fixed.
"""
from __future__ import annotations

__all__ = ["CENTRIFUGO_PONG", "OP_CLOSE", "OP_CONTINUATION", "OP_PING", "OP_TEXT", "masked_frame",
           "pong", "upgrade_request"]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_CLOSE = 0x8
OP_PING = 0x9
_OP_PONG = 0xA
_FIN = 0x80
_MASKED = 0x80
_ZERO_KEY = b"\0\0\0\0"


def masked_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final frame carrying `payload`, masked with the zero key."""
    size = len(payload)
    if size < 126:
        head = bytes((_FIN | opcode, _MASKED | size))
    elif size < 65536:
        head = bytes((_FIN | opcode, _MASKED | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((_FIN | opcode, _MASKED | 127)) + size.to_bytes(8, "big")
    return head + _ZERO_KEY + payload


def pong(payload: bytes) -> bytes:
    """The answer to a ping (control frames carry at most 125 bytes, so the short form always fits)."""
    return masked_frame(payload[:125], _OP_PONG)


CENTRIFUGO_PONG = masked_frame(b"{}")  # Centrifugo's application-level pong: an empty command


def upgrade_request(host: str, port: int, path: str, subprotocol: str | None) -> bytes:
    """The client's upgrade request; the key is fixed because the servers under test are known."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
