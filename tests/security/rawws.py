"""A WebSocket client that sends frames exactly as told, rule-breaking ones included (reserved
bits, fragments out of order, endless continuations), over a plain asyncio stream."""
from __future__ import annotations

import asyncio
import base64
import os
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

TEXT, BINARY, CONTINUATION, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9


@dataclass
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if self.opcode == CLOSE and len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode(errors="replace") if self.opcode == CLOSE else ""


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, subprotocol: str | None):
        self.reader, self.writer, self.subprotocol = reader, writer, subprotocol

    @classmethod
    async def connect(cls, url: str, subprotocol: str | None = None) -> RawWebSocket:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if subprotocol:
            head += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        writer.write((head + "\r\n").encode())
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not status.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(status.decode(errors="replace"))
        return cls(reader, writer, subprotocol)

    def send(self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> None:
        """One masked client frame; `rsv` is the three reserved bits (0-7)."""
        first = (0x80 if fin else 0) | (rsv << 4) | opcode
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", first, 0x80 | size)
        elif size < 65536:
            head = struct.pack("!BBH", first, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", first, 0x80 | 127, size)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if size < 4096 else _mask_fast(payload, mask)
        self.writer.write(head + mask + masked)

    async def drain(self) -> None:
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> Frame:
        return await asyncio.wait_for(self._read_frame(), timeout)

    async def close_frame(self, timeout: float = 10.0) -> Frame:
        """Read until the server's close frame (skipping data frames); fails if the socket ends first."""
        async def until_close() -> Frame:
            while True:
                frame = await self._read_frame()
                if frame.opcode == CLOSE:
                    return frame
        return await asyncio.wait_for(until_close(), timeout)

    async def _read_frame(self) -> Frame:
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return Frame(first & 0x0F, await self.reader.readexactly(size), bool(first & 0x80))

    def close(self) -> None:
        self.writer.close()


def _mask_fast(payload: bytes, mask: bytes) -> bytes:
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[:len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")
