"""Two small Redis connections on asyncio streams, parsed with hiredis:

- RespConnection pipelines commands in the order they are issued (one socket, replies matched
  first-in first-out), which is what keeps one node's publishes in order;
- SubscriberConnection holds the SUBSCRIBE state and hands every message to a callback; its
  `barrier()` (a PING) completes once every earlier (un)subscribe is in force on the server.
"""
from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import hiredis

__all__ = ["RedisAddress", "RespConnection", "SubscriberConnection", "RedisGone"]


class RedisGone(ConnectionError):
    """The connection to Redis is closed or broke; pending commands fail with it."""


class RedisAddress:
    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// URL: {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.tls = parts.scheme == "rediss"
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        self.db = int(parts.path.lstrip("/") or 0)

    def hello_commands(self) -> list[tuple]:
        commands = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


async def _open(address: RedisAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(address.host, address.port, ssl=True if address.tls else None)


class RespConnection:
    """Commands on one socket, answered in order."""

    def __init__(self, address: RedisAddress):
        self._address = address
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._reader_task: asyncio.Task | None = None
        self.closed: asyncio.Future | None = None  # completes when the socket is gone

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        reader, self._writer = await _open(self._address)
        self.closed = asyncio.get_running_loop().create_future()
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
        for command in self._address.hello_commands():
            await self.execute(*command)

    def execute(self, *args) -> asyncio.Future:
        """Send now (pipelined); the future gets the reply, or RedisGone / the Redis error."""
        future = asyncio.get_running_loop().create_future()
        if self._writer is None:
            future.set_exception(RedisGone("not connected to Redis"))
            return future
        self._writer.write(hiredis.pack_command(tuple(a for a in args if a is not None)))
        self._waiting.append(future)
        return future

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    future = self._waiting.popleft()
                    if not future.done():
                        if isinstance(reply, hiredis.ReplyError):
                            future.set_exception(reply)
                        else:
                            future.set_result(reply)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._fail_all()

    def _fail_all(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(RedisGone("the connection to Redis was lost"))

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._fail_all()


class SubscriberConnection:
    """A connection in subscribe mode; `on_message(channel, data)` runs for every message."""

    def __init__(self, address: RedisAddress, on_message: Callable[[bytes, bytes], None]):
        self._address = address
        self._on_message = on_message
        self._writer: asyncio.StreamWriter | None = None
        self._pongs: collections.deque[asyncio.Future] = collections.deque()
        self._reader_task: asyncio.Task | None = None
        self.closed: asyncio.Future | None = None

    async def connect(self) -> None:
        reader, self._writer = await _open(self._address)
        self.closed = asyncio.get_running_loop().create_future()
        hello = self._address.hello_commands()
        for command in hello:  # before subscribe mode: plain replies, checked here
            self._writer.write(hiredis.pack_command(tuple(a for a in command if a is not None)))
        parser = hiredis.Reader()
        for _ in hello:
            reply = False
            while reply is False:
                parser.feed(await reader.read(4096))
                reply = parser.gets()
            if isinstance(reply, hiredis.ReplyError):
                raise RedisGone(f"Redis refused {reply}")
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, parser))

    def subscribe(self, *channels: bytes) -> None:
        self._send("SUBSCRIBE", *channels)

    def unsubscribe(self, *channels: bytes) -> None:
        self._send("UNSUBSCRIBE", *channels)

    def barrier(self) -> asyncio.Future:
        """Completes when everything sent before it has been processed by Redis."""
        future = asyncio.get_running_loop().create_future()
        if self._writer is None:
            future.set_exception(RedisGone("not connected to Redis"))
            return future
        self._send("PING")
        self._pongs.append(future)
        return future

    def _send(self, *args) -> None:
        if self._writer is not None:
            self._writer.write(hiredis.pack_command(args))

    async def _read(self, reader: asyncio.StreamReader, parser) -> None:
        try:
            while True:
                while (reply := parser.gets()) is not False:
                    self._dispatch(reply)
                data = await reader.read(65536)
                if not data:
                    break
                parser.feed(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writer, writer = None, self._writer
            if writer is not None:
                writer.close()
            while self._pongs:
                future = self._pongs.popleft()
                if not future.done():
                    future.set_exception(RedisGone("the connection to Redis was lost"))
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(None)

    def _dispatch(self, reply) -> None:
        kind = reply[0]
        if kind == b"message":
            self._on_message(reply[1], reply[2])
        elif kind == b"pong":
            future = self._pongs.popleft()
            if not future.done():
                future.set_result(None)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
