"""An event handler that records the raw bytes it receives, for attacks aimed through fastpush at
the application server behind it: each request is parsed by httptools, so a smuggled second
request shows up as a second request, and an injected header as a header."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    @property
    def event(self) -> str:
        return (self.header("ce-eventName") or b"").decode("latin-1")


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    delay: float = 0.0
    extra_head: bytes = b""  # raw header lines, for answers no honest server gives


@dataclass
class UpstreamProbe:
    """Answers OPTIONS as a willing handler, POSTs with `replies[event]` (default 204)."""

    replies: dict[str, Reply] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    open_connections: int = 0
    most_open_connections: int = 0
    port: int = 0
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> UpstreamProbe:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/up/{{hub}}/{{event}}"

    def posts(self, event: str | None = None) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST" and (event is None or r.event == event)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self.most_open_connections = max(self.most_open_connections, self.open_connections)
        parsed: list[Seen] = []
        collector = _Collector(parsed)
        parser = collector.parser = httptools.HttpRequestParser(collector)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                self.raw += data
                parser.feed_data(data)
                while parsed:
                    seen = parsed.pop(0)
                    self.requests.append(seen)
                    writer.write(await self._answer(seen))
                    await writer.drain()
        except (httptools.HttpParserError, ConnectionError):
            return
        finally:
            self.open_connections -= 1
            writer.close()

    async def _answer(self, seen: Seen) -> bytes:
        if seen.method == "OPTIONS":
            return b"HTTP/1.1 200 OK\r\nWebHook-Allowed-Origin: *\r\nContent-Length: 0\r\n\r\n"
        reply = self.replies.get(seen.event, Reply(204))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        head = f"HTTP/1.1 {reply.status} X\r\nContent-Length: {len(reply.body)}\r\n"
        if reply.content_type:
            head += f"Content-Type: {reply.content_type}\r\n"
        return head.encode() + reply.extra_head + b"\r\n" + reply.body


class _Collector:
    def __init__(self, out: list[Seen]):
        self.out = out
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.parser: httptools.HttpRequestParser | None = None

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.parser is not None
        self.out.append(Seen(self.parser.get_method().decode(), self.url.decode("latin-1"), self.headers,
                             bytes(self.body)))
