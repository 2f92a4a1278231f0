"""The trigger every broadcasting server in the benchmark speaks, except fastpush's REST API: each line
on stdin is one message to broadcast. A pipe costs the server almost nothing per message, so the
comparison measures fan-out, not a control protocol; EOF stops the server."""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

__all__ = ["broadcast_stdin_lines"]


class _Lines(asyncio.Protocol):
    def __init__(self, on_line: Callable[[bytes], object], closed: asyncio.Future[None]):
        self.on_line = on_line
        self.closed = closed
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        # Every complete line of this read is broadcast in the same loop turn, as a burst would be.
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        for line in lines:
            self.on_line(line)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def broadcast_stdin_lines(on_line: Callable[[bytes], object]) -> None:
    """Call on_line for each line of stdin (without the newline) until EOF."""
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    await loop.connect_read_pipe(lambda: _Lines(on_line, closed), sys.stdin)
    await closed
