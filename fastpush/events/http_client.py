"""A small HTTP/1.1 client for upstream calls: keep-alive connections per origin, a deadline per
request, httptools for parsing. Upstream calls never share a socket with the fan-out path."""
from __future__ import annotations

import asyncio
import re
import ssl
from urllib.parse import urlsplit

import httptools

__all__ = ["HttpBusy", "HttpClient", "HttpError", "HttpTimeout", "Response"]

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_RESPONSE_HEAD_BYTES = 64 * 1024
_IDLE_PER_ORIGIN = 8
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name
# CR, LF and NUL would end a header early (injection, smuggling); other controls are refused as well.
# Non-ASCII text is sent as UTF-8 bytes (RFC 9110 obs-text).
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class HttpError(Exception):
    """The upstream could not be reached or answered something that is not HTTP."""


class HttpTimeout(HttpError):
    """No whole answer within the request's deadline."""


class HttpBusy(HttpError):
    """Refused without being sent: every connection to the origin is in use and as many requests
    as may wait for one are waiting already."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers  # lower-cased names
        self.body = body


class _ClosedEarly(HttpError):
    """The upstream closed the socket before a whole answer: a pooled socket it had timed out."""


class _Parser:
    """httptools callbacks collecting one response."""

    def __init__(self, max_body: int) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.max_body = max_body
        self.too_large = False
        self.head_size = 0
        self.done = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_RESPONSE_HEAD_BYTES:
            self.too_large = True
            return
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            self.too_large = True  # the exchange stops reading and closes the socket
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class HttpClient:
    """Keep-alive connections per origin, at most `max_connections` of them in use at once (later
    requests wait their turn, first come first served, within their deadline; at most
    `max_waiting` of them per origin, more are refused at once with HttpBusy), and answers of at
    most `max_response_bytes`. The waiting bound is what keeps a slow upstream in a reconnect
    storm from holding every handshake until it times out: the ones over it get a quick answer."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, *, max_connections: int = 64,
                 max_waiting: int = 256, max_response_bytes: int = MAX_RESPONSE_BYTES):
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._waiting: dict[tuple[str, str, int], int] = {}
        self.max_connections = max_connections
        self.max_waiting = max_waiting
        self.max_response_bytes = max_response_bytes

    def waiting(self, origin: tuple[str, str, int]) -> int:
        """Requests to `origin` (scheme, host, port) waiting for a connection."""
        return self._waiting.get(origin, 0)

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes = b"",
                      timeout: float = 10.0) -> Response:
        try:
            return await asyncio.wait_for(self._request(method, url, headers, body), timeout)
        except TimeoutError:
            raise HttpTimeout(f"{method} {url} timed out after {timeout:g} s") from None
        except (OSError, httptools.HttpParserError) as exc:
            raise HttpError(f"{method} {url} failed: {exc}") from None

    async def close(self) -> None:
        for pool in self._idle.values():
            for _, writer in pool:
                writer.close()
        self._idle.clear()

    async def _request(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        raw = _request_head(method, target, parts.netloc.rsplit("@", 1)[-1], headers, len(body)) + body
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self.max_connections)
        waiting = self._waiting.get(origin, 0)
        if slots.locked():
            if waiting >= self.max_waiting:
                raise HttpBusy(f"{method} {url} not sent: {self.max_connections} requests to it are under way "
                               f"and {waiting} waiting")
            self._waiting[origin] = waiting + 1
            try:
                await slots.acquire()
            finally:
                self._waiting[origin] -= 1
        else:
            await slots.acquire()
        try:
            pool = self._idle.setdefault(origin, [])
            while pool:  # a pooled connection may have been closed by the server: fall back to a new one
                reader, writer = pool.pop()
                try:
                    return await self._exchange(origin, reader, writer, raw)
                except (OSError, _ClosedEarly):
                    pass
            reader, writer = await asyncio.open_connection(parts.hostname, port,
                                                           ssl=self._ssl if parts.scheme == "https" else None)
            return await self._exchange(origin, reader, writer, raw)
        finally:
            slots.release()

    async def _exchange(self, origin: tuple[str, str, int], reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, raw: bytes) -> Response:
        """One request and its response; the socket goes back to the pool only after a whole,
        keep-alive answer (a failure, a timeout or a cancellation closes it)."""
        reusable = False
        try:
            writer.write(raw)
            await writer.drain()
            parsed = _Parser(self.max_response_bytes)
            while not parsed.done:
                chunk = await reader.read(65536)
                if not chunk:
                    parsed.parser.feed_data(b"")
                    if not parsed.done:
                        raise _ClosedEarly("the upstream closed the connection mid-response")
                    break
                parsed.parser.feed_data(chunk)
                if parsed.too_large:
                    raise HttpError(f"the response is larger than {self.max_response_bytes} bytes "
                                    f"(or its head than {MAX_RESPONSE_HEAD_BYTES})")
            response = Response(parsed.parser.get_status_code(), parsed.headers, b"".join(parsed.body))
            reusable = parsed.parser.should_keep_alive() and len(self._idle[origin]) < _IDLE_PER_ORIGIN
        finally:
            if reusable:
                self._idle[origin].append((reader, writer))
            else:
                writer.close()
        return response


def _request_head(method: str, target: str, host: str, headers: dict[str, str], length: int) -> bytes:
    """The request head; refuses (HttpError) any value that could end a header or the request line
    early, so nothing a client chose can inject headers or smuggle a second request."""
    if _UNSAFE.search(target) or " " in target or _UNSAFE.search(host):
        raise HttpError(f"refusing to send the request target {target!r}")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}", "Connection: keep-alive"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _UNSAFE.search(value):
            raise HttpError(f"refusing to send header {name!r}: an invalid name or a control character in its value")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
