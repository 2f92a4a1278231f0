"""A bare WebSocket client protocol for the ticker benchmark, speaking each server's dialect.

- "webpubsub": fastpush with json.webpubsub.azure.v1; ready after the `connected` message.
- "plain": a server that needs nothing after the upgrade (the Node ws topic map); ready at the 101.
- "centrifugo": Centrifugo's bidirectional JSON protocol: after the 101 the client sends its `hello` (a
  connect command), is ready when the reply comes, and answers the server's application ping (`{}`,
  possibly one line of a frame holding several) with `{}`.

It answers WebSocket pings, remembers the close code it was sent, and hands every text frame's payload
(as offsets into the bytes read, never copied) to `on_text` once ready. Subclasses say what a text
frame, readiness and failure mean to them.

It is a buffered protocol, so that a subclass can choose how many bytes one read takes (`get_buffer`):
that is how a slow reader reads a little at a time. Every connection of a process reads into one
shared buffer, which is consumed before the next read.
"""
from __future__ import annotations

import asyncio
import time

from .ws_frames import CENTRIFUGO_PONG, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT, pong

__all__ = ["DIALECTS", "SHARED_VIEW", "WsClient"]

DIALECTS = ("webpubsub", "plain", "centrifugo")
MAX_HEAD = 16384
READ_BUFFER = 256 * 1024
_SHARED = bytearray(READ_BUFFER)
SHARED_VIEW = memoryview(_SHARED)
_HANDSHAKE, _WELCOME, _READY = range(3)
_PING_LINE = b"{}"


class WsClient(asyncio.BufferedProtocol):
    """One connection. `state` goes handshake -> welcome (if the dialect has one) -> ready."""

    def __init__(self, request: bytes, dialect: str, hello: bytes | None = None):
        self.request = request
        self.dialect = dialect
        self.hello = hello
        self.transport: asyncio.Transport | None = None
        self.state = _HANDSHAKE
        self.pending = b""
        self.close_code: int | None = None

    # --- hooks ------------------------------------------------------------------------------
    def on_ready(self) -> None: ...
    def on_failed(self, reason: str) -> None: ...
    def on_text(self, data: bytes | bytearray, start: int, end: int, now: int) -> None: ...

    # --- asyncio.BufferedProtocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview:
        return SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_SHARED[:nbytes])

    def data_received(self, data: bytes | bytearray) -> None:
        """What one read brought (a copy: the shared buffer is reused by the next read)."""
        if self.pending:
            data = self.pending + data
            self.pending = b""
        if self.state == _HANDSHAKE:
            rest = self._read_head(data)
            if rest is None:
                return
            data = rest
        self.read_frames(data, time.monotonic_ns())

    # --- reading ----------------------------------------------------------------------------
    def _read_head(self, data: bytes | bytearray) -> bytes | bytearray | None:
        """The bytes after the response head, or None while it is incomplete or was refused."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HEAD:
                self._fail("response head too long")
            else:
                self.pending = data
            return None
        head = data[:end]
        if not head.startswith(b"HTTP/1.1 101"):
            self._fail(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            return None
        if self.dialect == "plain":
            self._become_ready()
        else:
            self.state = _WELCOME
            if self.hello is not None:
                assert self.transport is not None
                self.transport.write(self.hello)
        return data[end + 4:]

    def read_frames(self, data: bytes | bytearray, now: int) -> None:
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
            if opcode in (OP_TEXT, OP_CONTINUATION):
                self._text(data, start, end, now)
            elif opcode == OP_PING:
                self._write(pong(data[start:end]))
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(data[start:start + 2], "big") if length >= 2 else 1005
                assert self.transport is not None
                self.transport.close()
                return
            pos = end
        if pos < size:
            self.pending = data[pos:]

    def _text(self, data: bytes | bytearray, start: int, end: int, now: int) -> None:
        if self.state == _READY:
            if self.dialect == "centrifugo" and data.find(_PING_LINE, start, end) >= 0:
                self._answer_pings(data[start:end])
            self.on_text(data, start, end, now)
        elif self.dialect == "centrifugo":
            self._connect_reply(data, start, end, now)
        else:  # json.webpubsub.azure.v1's `connected` message
            self._become_ready()

    def _connect_reply(self, data: bytes | bytearray, start: int, end: int, now: int) -> None:
        """The reply to the connect command: the first line of the first frame; the frame's other lines
        (pushes or a ping coalesced with it) are read as usual."""
        newline = data.find(b"\n", start, end)
        first_end = end if newline < 0 else newline
        if data.find(b'"error"', start, first_end) >= 0:
            self._fail("connect refused: " + data[start:first_end].decode(errors="replace")[:200])
            return
        self._become_ready()
        if newline >= 0:
            self._text(data, newline + 1, end, now)

    def _answer_pings(self, payload: bytes) -> None:
        for line in payload.split(b"\n"):
            if line == _PING_LINE:
                self._write(CENTRIFUGO_PONG)

    def _become_ready(self) -> None:
        self.state = _READY
        self.on_ready()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, reason: str) -> None:
        self.on_failed(reason)
        if self.transport is not None:
            self.transport.close()
