"""The ways the orchestrator publishes: fastpush's REST API, a line on the server's stdin, or (Centrifugo)
`publish` commands of a client connection.

`send` writes one message and returns without waiting for an answer; `burst` writes many in one go
(pipelined, for REST), which is how saturation is reached; `settle` waits until REST (or Centrifugo) has
answered everything so far (bounded) and records every answer that was not 202 (or carried an error).
"""
from __future__ import annotations

import asyncio
from typing import Protocol
from urllib.parse import urlsplit

from .centrifugo import PATH_SUFFIX, connect_command
from .tokens import rest_send_url, sign
from .ws_publisher import WsPublisher

__all__ = ["CentrifugoPublisher", "PipePublisher", "Publisher", "RestPublisher"]

SETTLE_TIMEOUT = 30.0


class Publisher(Protocol):
    failures: list[str]

    async def send(self, text: str) -> None: ...
    async def burst(self, texts: list[str]) -> None: ...
    async def settle(self) -> None: ...
    async def close(self) -> None: ...


class PipePublisher:
    """One line per message on the server process's stdin (the embedded fastpush and the peers)."""

    def __init__(self, stdin: asyncio.StreamWriter):
        self.stdin = stdin
        self.failures: list[str] = []

    async def send(self, text: str) -> None:
        self.stdin.write(text.encode() + b"\n")
        await self.stdin.drain()

    async def burst(self, texts: list[str]) -> None:
        self.stdin.write("".join(t + "\n" for t in texts).encode())
        await self.stdin.drain()

    async def settle(self) -> None:
        return None

    async def close(self) -> None:
        return None


class CentrifugoPublisher:
    """A Centrifugo client publishing to one channel with `publish` commands on one WebSocket, one per
    frame; `settle` waits (bounded) until every publish is answered."""

    def __init__(self, client: WsPublisher, channel: str):
        self.client = client
        self.channel = channel
        self.failures = client.failures

    @classmethod
    async def open(cls, port: int, channel: str) -> CentrifugoPublisher:
        client = await WsPublisher.open("127.0.0.1", port, PATH_SUFFIX, None, "centrifugo", connect_command([]))
        return cls(client, channel)

    async def send(self, text: str) -> None:
        await self.client.send(self.client.frames([(self.channel, text)]))

    async def burst(self, texts: list[str]) -> None:
        await self.client.send(self.client.frames([(self.channel, text) for text in texts]))

    async def settle(self) -> None:
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                while self.client.answered < self.client.published and not self.client.transport_closed:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            self.failures.append(f"{self.client.published - self.client.answered} publishes unanswered after "
                                 f"{SETTLE_TIMEOUT} s")

    async def close(self) -> None:
        self.client.close()


class RestPublisher:
    """`POST /api/hubs/{hub}/:send` (text/plain) on one keep-alive connection, answers read alongside."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes):
        self.reader = reader
        self.writer = writer
        self.head = head
        self.sent = 0
        self.answered = 0
        self.failures: list[str] = []
        self._answers = asyncio.get_running_loop().create_task(self._read_answers())

    @classmethod
    async def open(cls, endpoint: str, hub: str, access_key: str) -> RestPublisher:
        url = rest_send_url(endpoint, hub)
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        head = (f"POST {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Authorization: Bearer {sign(url, access_key)}\r\nContent-Type: text/plain\r\n").encode()
        return cls(reader, writer, head)

    def _request(self, text: str) -> bytes:
        body = text.encode()
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def send(self, text: str) -> None:
        self.sent += 1
        self.writer.write(self._request(text))
        await self.writer.drain()

    async def burst(self, texts: list[str]) -> None:
        self.sent += len(texts)
        self.writer.write(b"".join(self._request(t) for t in texts))
        await self.writer.drain()

    async def settle(self) -> None:
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                while self.answered < self.sent and not self._answers.done():
                    await asyncio.sleep(0.01)
        except TimeoutError:
            self.failures.append(f"{self.sent - self.answered} requests unanswered after {SETTLE_TIMEOUT} s")

    async def _read_answers(self) -> None:
        try:
            while True:
                head = await self.reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await self.reader.readexactly(length) if length else b""
                self.answered += 1
                if not head.startswith(b"HTTP/1.1 202"):
                    self.failures.append((head.split(b"\r\n", 1)[0] + b" " + body[:200]).decode(errors="replace"))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if self.answered < self.sent:
                self.failures.append(f"REST connection lost: {exc!r}")

    async def close(self) -> None:
        self._answers.cancel()
        self.writer.close()
