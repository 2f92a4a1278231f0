"""A small HTTP/1.1 client for upstream calls: keep-alive connections per origin, a deadline per
request, httptools for parsing. Upstream calls never share a socket with the fan-out path."""
from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httptools

__all__ = ["HttpClient", "HttpError", "Response"]

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_IDLE_PER_ORIGIN = 8


class HttpError(Exception):
    """The upstream could not be reached or answered something that is not HTTP."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers  # lower-cased names
        self.body = body


class _Parser:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.done = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_RESPONSE_BYTES:
            raise HttpError(f"response body over {MAX_RESPONSE_BYTES} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class HttpClient:
    def __init__(self, ssl_context: ssl.SSLContext | None = None):
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes = b"",
                      timeout: float = 10.0) -> Response:
        try:
            return await asyncio.wait_for(self._request(method, url, headers, body), timeout)
        except asyncio.TimeoutError:
            raise HttpError(f"{method} {url} timed out after {timeout:g} s") from None
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
        host = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
                 "Connection: keep-alive"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        pool = self._idle.setdefault(origin, [])
        while pool:  # a pooled connection may have been closed by the server: fall back to a new one
            reader, writer = pool.pop()
            try:
                return await self._exchange(origin, reader, writer, raw)
            except (OSError, HttpError, httptools.HttpParserError):
                writer.close()
        reader, writer = await asyncio.open_connection(parts.hostname, port,
                                                       ssl=self._ssl if parts.scheme == "https" else None)
        return await self._exchange(origin, reader, writer, raw)

    async def _exchange(self, origin, reader, writer, raw: bytes) -> Response:
        writer.write(raw)
        await writer.drain()
        parsed = _Parser()
        while not parsed.done:
            chunk = await reader.read(65536)
            if not chunk:
                parsed.parser.feed_data(b"")
                if not parsed.done:
                    raise HttpError("the upstream closed the connection mid-response")
                break
            parsed.parser.feed_data(chunk)
        response = Response(parsed.parser.get_status_code(), parsed.headers, b"".join(parsed.body))
        if parsed.parser.should_keep_alive() and len(self._idle[origin]) < _IDLE_PER_ORIGIN:
            self._idle[origin].append((reader, writer))
        else:
            writer.close()
        return response
