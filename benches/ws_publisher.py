"""The publisher: one WebSocket client that sends ticks to the server under test, in its dialect.

Every server gets its ticks the same way, over one WebSocket from this process, one tick per frame:
- fastpush ("webpubsub"): a json.webpubsub.azure.v1 client with the `webpubsub.sendToGroup` role sends
  `{"type":"sendToGroup",...,"noEcho":true}` without an ackId (nothing comes back);
- Centrifugo: a client publishes with `{"id":N,"publish":{"channel":...,"data":"..."}}` after its
  connect command; each publish is answered, and an answer with an error is recorded. At most WINDOW
  publishes wait for their answer: Centrifugo closes a client whose pong it does not get within 8 s
  (3012), and the pong queues behind every publish sent before it;
- Node ws ("plain"): `{"topic":...,"data":"..."}`.
"""
from __future__ import annotations

import asyncio

from .ws_client import WsClient
from .ws_frames import masked_frame, upgrade_request

__all__ = ["WsPublisher", "publish_text"]

OPEN_TIMEOUT = 15.0
ANSWER_TIMEOUT = 60.0
DRAIN_TIMEOUT = 60.0
ANSWER_POLL = 0.001
MAX_FAILURES = 5
WINDOW = 1000


def publish_text(dialect: str, group: str, data: str, command_id: int) -> str:
    """One tick as its publisher sends it. `group` and `data` are ASCII without quotes or backslashes (the
    benchmark's own names and stamps), so no JSON escaping is needed."""
    if dialect == "webpubsub":
        return f'{{"type":"sendToGroup","group":"{group}","dataType":"text","data":"{data}","noEcho":true}}'
    if dialect == "centrifugo":
        return f'{{"id":{command_id},"publish":{{"channel":"{group}","data":"{data}"}}}}'
    return f'{{"topic":"{group}","data":"{data}"}}'


class WsPublisher(WsClient):
    """A connected publisher: `frames` encodes ticks, `send` writes them."""

    def __init__(self, request: bytes, dialect: str, hello: bytes | None):
        super().__init__(request, dialect, hello)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()
        self.failures: list[str] = []
        self.next_id = 2  # the connect command was 1
        self.published = 0
        self.answered = 0  # Centrifugo's replies to publish commands

    @classmethod
    async def open(cls, host: str, port: int, path: str, protocol: str | None, dialect: str,
                   hello: str | None) -> WsPublisher:
        loop = asyncio.get_running_loop()
        publisher = cls(upgrade_request(host, port, path, protocol), dialect,
                        masked_frame(hello.encode()) if hello else None)
        async with asyncio.timeout(OPEN_TIMEOUT):
            await loop.create_connection(lambda: publisher, host, port)
            await publisher.opened
        return publisher

    def frames(self, ticks: list[tuple[str, str]]) -> list[bytes]:
        """The frames for (group, data) pairs, each with its own command id where the dialect has them."""
        first = self.next_id
        self.next_id += len(ticks)
        return [masked_frame(publish_text(self.dialect, group, data, first + i).encode())
                for i, (group, data) in enumerate(ticks)]

    async def send(self, frames: list[bytes]) -> None:
        """Write the frames, waiting while the socket's buffer is full (and for Centrifugo's answers)."""
        for start in range(0, len(frames), WINDOW):
            if self.transport_closed:
                raise ConnectionError(f"the publisher's connection is closed (close code {self.close_code})")
            if self.dialect == "centrifugo":
                await self._answered(self.published - WINDOW)
            chunk = frames[start:start + WINDOW]
            assert self.transport is not None
            self.transport.write(b"".join(chunk))
            self.published += len(chunk)
            async with asyncio.timeout(DRAIN_TIMEOUT):  # a server that stopped reading ends the row
                await self.writable.wait()

    async def _answered(self, count: int) -> None:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            while self.answered < count and not self.transport_closed:
                await asyncio.sleep(ANSWER_POLL)

    # --- WsClient / asyncio.Protocol hooks ----------------------------------------------------
    def on_ready(self) -> None:
        if not self.opened.done():
            self.opened.set_result(None)

    def on_failed(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"publisher: {reason}"))

    @property
    def transport_closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def on_text(self, data: bytes | bytearray, start: int, end: int, now: int) -> None:
        if self.dialect == "centrifugo":
            self.answered += data.count(b'"id":', start, end)
        if len(self.failures) < MAX_FAILURES and data.find(b'"error"', start, end) >= 0:
            self.failures.append(data[start:min(end, start + 300)].decode(errors="replace"))

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        self.on_failed(f"connection lost ({exc or self.close_code})")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

