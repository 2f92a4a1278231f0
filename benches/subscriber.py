"""A minimal WebSocket subscriber for the load generator: no per-frame objects on the usual path.

It does only what the benchmark needs: send the upgrade request, read the 101 (and the JSON
subprotocol's `connected` message), then read each message's send stamp or, at saturation, only count
bytes. The load generator must spend less CPU per message than the server spends per delivery, so the
usual read (exactly one frame shaped like the previous one) takes the stamp at its known offset
without parsing the frame; counting works because every frame of a run has the same length
(payload.py). It answers pings, and `keepalive` sends an unsolicited pong (RFC 6455 allows it) so a
server's heartbeat has no reason to ping in the middle of a measurement.
"""
from __future__ import annotations

import asyncio
import time
from typing import Protocol

from . import payload
from .ws_frames import upgrade_request

__all__ = ["JSON_SUBPROTOCOL", "READY", "WELCOME", "Sink", "Subscriber", "upgrade_request"]

JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
_SELECTED_JSON = f"sec-websocket-protocol: {JSON_SUBPROTOCOL}".encode()
_MAX_HEAD = 16384
_OP_TEXT = 0x1
_OP_CLOSE = 0x8
_OP_PING = 0x9
_PONG = 0x8A  # FIN + pong; client frames are masked, here with a zero key
_MARK = payload.MARKER[0]
_HANDSHAKE, _WELCOME, _READY = range(3)
WELCOME, READY = _WELCOME, _READY  # for subclasses


class Sink(Protocol):
    """Where subscribers report what happened (the load generator's fleet)."""

    counting: bool

    def on_ready(self, sub: Subscriber) -> None: ...
    def on_failed(self, sub: Subscriber, reason: str) -> None: ...
    def on_stamp(self, send_ns: int, seq: int, now_ns: int) -> None: ...
    def on_counted(self, sub: Subscriber) -> None: ...
    def on_lost(self, sub: Subscriber) -> None: ...


class Subscriber(asyncio.Protocol):
    """One subscriber connection. `frame_len` is the length of its last data frame and `stamp_at` where
    the stamp was in it; `received` and `target` are the bytes counted and expected while counting."""

    __slots__ = ("sink", "request", "transport", "state", "pending", "frame_len", "stamp_at", "received",
                 "target")

    def __init__(self, sink: Sink, request: bytes):
        self.sink = sink
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.state = _HANDSHAKE
        self.pending = b""
        self.frame_len = 0
        self.stamp_at = 0
        self.received = 0
        self.target = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.sink.counting and self.state == _READY:
            before = self.received
            self.received = before + len(data)
            if before < self.target <= self.received:
                self.sink.on_counted(self)
            return
        now = time.monotonic_ns()
        at = self.stamp_at
        if len(data) == self.frame_len and not self.pending and data[at - 1] == _MARK:
            send_ns, seq = payload.stamp(data, at)
            self.sink.on_stamp(send_ns, seq, now)
            return
        if self.pending:
            data = self.pending + data
            self.pending = b""
        if self.state == _HANDSHAKE:
            rest = self._read_head(data)
            if rest is None:
                return
            data = rest
        self._read_frames(data, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.on_lost(self)

    def keepalive(self) -> None:
        self._pong(b"")

    def _pong(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(bytes((_PONG, 0x80 | len(data), 0, 0, 0, 0)) + data)

    def _read_head(self, data: bytes) -> bytes | None:
        """The bytes after the response head, or None while the head is incomplete or refused."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_HEAD:
                self._fail("response head too long")
            else:
                self.pending = data
            return None
        head = data[:end]
        if not head.startswith(b"HTTP/1.1 101"):
            self._fail(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            return None
        self._upgraded(head)
        return data[end + 4:]

    def _upgraded(self, head: bytes) -> None:
        """After the 101: a JSON subscriber waits for its `connected` message, a raw one is ready."""
        if _SELECTED_JSON in head.lower():
            self.state = _WELCOME
        else:
            self.state = _READY
            self.sink.on_ready(self)

    def _welcomed(self, data: bytes, start: int, end: int) -> None:
        """The first text message after the upgrade (the JSON subprotocol's `connected`)."""
        self.state = _READY
        self.sink.on_ready(self)

    def _read_frames(self, data: bytes, now: int) -> None:
        pos, size = 0, len(data)
        while size - pos >= 2:
            length, start = data[pos + 1] & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, start = int.from_bytes(data[pos + 2:pos + 4], "big"), pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, start = int.from_bytes(data[pos + 2:pos + 10], "big"), pos + 10
            end = start + length
            if end > size:
                break
            opcode = data[pos] & 0x0F
            if opcode == _OP_TEXT:
                if self.state == _READY:
                    self._read_stamp(data, pos, start, end, now)
                else:
                    self._welcomed(data, start, end)
            elif opcode == _OP_PING:
                self._pong(data[start:end])
            elif opcode == _OP_CLOSE:
                assert self.transport is not None
                self.transport.close()
                return
            pos = end
        if pos < size:
            self.pending = data[pos:]

    def _read_stamp(self, data: bytes, pos: int, start: int, end: int, now: int) -> None:
        at = payload.find(data, start, end)
        if at >= 0:
            self.frame_len, self.stamp_at = end - pos, at - pos
            send_ns, seq = payload.stamp(data, at)
            self.sink.on_stamp(send_ns, seq, now)

    def _fail(self, reason: str) -> None:
        self.sink.on_failed(self, reason)
        assert self.transport is not None
        self.transport.close()
