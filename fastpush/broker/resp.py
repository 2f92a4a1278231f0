"""Two small Redis connections on asyncio streams, parsed with hiredis:

- RespConnection pipelines commands in the order they are issued (one socket, replies matched
  first-in first-out), which is what keeps one node's publishes in order;
- SubscriberConnection holds the SUBSCRIBE state and hands every message to a callback; its
  `barrier()` completes once every earlier (un)subscribe is in force on the server (one PING
  shared by every barrier asked before the next (un)subscribe, none if all are already in force).

Both write what one loop turn packs in a single send (_Outbox): in a reconnect storm each
handshake writes a few commands, and one system call per command was a fifth of a handshake's CPU.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import socket
import struct
from collections.abc import Callable
from typing import Literal, TypeAlias
from urllib.parse import unquote, urlsplit

import hiredis

__all__ = ["RedisAddress", "RespConnection", "SubscriberConnection", "RedisGone", "RespReply", "RespItem", "Arg"]

# What hiredis makes of a RESP2 reply: bulk and simple strings are bytes, integers int, a nil
# None, an array a list; an error inside an array stays a ReplyError value. (No encoding is set,
# and fastpush never switches to RESP3.)
RespItem: TypeAlias = "bytes | int | hiredis.ReplyError | list[RespItem] | None"
# What a command's future resolves to: an error reply at the top level fails the future instead.
RespReply: TypeAlias = "bytes | int | list[RespItem] | None"
# A command argument, as hiredis.pack_command takes it (None arguments are left out).
Arg: TypeAlias = "str | bytes | int | float | memoryview"


class RedisGone(ConnectionError):
    """The connection to Redis is closed or broke; pending commands fail with it."""


@dataclasses.dataclass(frozen=True)
class RedisAddress:
    """Where one Redis server listens and how to log in to it."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """`redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS; ValueError otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// URL: {url!r}")
        return cls(parts.hostname or "127.0.0.1", parts.port or 6379, parts.scheme == "rediss",
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None,
                   int(parts.path.lstrip("/") or 0))

    def at(self, host: str, port: int) -> RedisAddress:
        """The same login on another server (a master Sentinel names)."""
        return dataclasses.replace(self, host=host, port=port)

    def hello_commands(self) -> list[tuple[str | int, ...]]:
        commands: list[tuple[str | int, ...]] = []
        if self.password is not None:
            commands.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


async def _open(address: RedisAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(address.host, address.port, ssl=True if address.tls else None)


class _Outbox:
    """What one loop turn sends on a socket, written at the turn's end in one call, in order.
    `drop` forgets what is not written yet (the connection failed: nothing may reach Redis later)."""

    __slots__ = ("_writer", "_parts")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer: asyncio.StreamWriter | None = writer
        self._parts: list[bytes] = []

    def add(self, data: bytes) -> None:
        if not self._parts:
            asyncio.get_running_loop().call_soon(self._flush)
        self._parts.append(data)

    def _flush(self) -> None:
        parts, self._parts = self._parts, []
        writer = self._writer
        if writer is not None and parts and not writer.transport.is_closing():
            writer.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def drop(self) -> None:
        self._writer = None
        self._parts = []


class RespConnection:
    """Commands on one socket, answered in order."""

    def __init__(self, address: RedisAddress):
        self._address = address
        self._writer: asyncio.StreamWriter | None = None
        self._outbox: _Outbox | None = None
        self._waiting: collections.deque[asyncio.Future[RespReply]] = collections.deque()
        self._reader_task: asyncio.Task[None] | None = None
        self.closed: asyncio.Future[None] | None = None  # completes when the socket is gone

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        reader, self._writer = await _open(self._address)
        self._outbox = _Outbox(self._writer)
        self.closed = asyncio.get_running_loop().create_future()
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
        for command in self._address.hello_commands():
            try:
                await self.execute(*command)
            except hiredis.ReplyError as exc:  # a wrong password: an answer to report, as for the subscriber
                raise RedisGone(f"Redis refused {command[0]}: {exc}") from None

    def execute(self, *args: Arg | None) -> asyncio.Future[RespReply]:
        """Send at the end of this loop turn (pipelined, in order); the future gets the reply, or
        RedisGone / the Redis error."""
        future: asyncio.Future[RespReply] = asyncio.get_running_loop().create_future()
        if self._outbox is None:
            future.set_exception(RedisGone("not connected to Redis"))
            return future
        # hiredis' stub declares cmd as a 1-tuple; it takes any number of arguments.
        self._outbox.add(hiredis.pack_command(tuple(a for a in args if a is not None)))  # type: ignore[arg-type]
        self._waiting.append(future)
        return future

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = hiredis.Reader()
        reply: RespItem | Literal[False]  # what gets() returns (False: no whole reply yet); its stub says Any
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
        if self._outbox is not None:
            self._outbox.drop()
            self._outbox = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(RedisGone("the connection to Redis was lost"))

    def abort(self) -> None:
        """Close now with a reset, dropping what was not sent (`close` then finishes the job)."""
        if self._outbox is not None:
            self._outbox.drop()
        _abort(self._writer)

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
        self._outbox: _Outbox | None = None
        # Per PING sent and not answered yet, the barriers its PONG completes.
        self._pongs: collections.deque[list[asyncio.Future[None]]] = collections.deque()
        self._unsettled = True  # an (un)subscribe was sent after the last PING
        self._reader_task: asyncio.Task[None] | None = None
        self.closed: asyncio.Future[None] | None = None

    async def connect(self) -> None:
        reader, self._writer = await _open(self._address)
        self.closed = asyncio.get_running_loop().create_future()
        hello = self._address.hello_commands()
        for command in hello:  # before subscribe mode: plain replies, checked here
            packed = tuple(a for a in command if a is not None)
            self._writer.write(hiredis.pack_command(packed))  # type: ignore[arg-type]  # stub: a 1-tuple
        parser = hiredis.Reader()
        reply: RespItem | Literal[False]  # what gets() returns (False: no whole reply yet); its stub says Any
        for _ in hello:
            reply = False
            while reply is False:
                data = await reader.read(4096)
                if not data:  # at EOF read() returns at once: looping on it would hold the event loop
                    raise RedisGone("Redis closed the connection before answering")
                parser.feed(data)
                reply = parser.gets()
            if isinstance(reply, hiredis.ReplyError):
                raise RedisGone(f"Redis refused {reply}")
        self._outbox = _Outbox(self._writer)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader, parser))

    def subscribe(self, *channels: bytes) -> None:
        self._send("SUBSCRIBE", *channels)

    def unsubscribe(self, *channels: bytes) -> None:
        self._send("UNSUBSCRIBE", *channels)

    def barrier(self) -> asyncio.Future[None]:
        """Completes when everything sent before it has been processed by Redis: with the PONG of
        the last PING if nothing was sent after it (sent now if need be), at once if that PONG
        has come already. A future of its own, so that a cancelled waiter leaves the others be."""
        if self._unsettled or self._outbox is None:
            return self.ping()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._pongs:
            self._pongs[-1].append(future)
        else:
            future.set_result(None)
        return future

    def ping(self) -> asyncio.Future[None]:
        """A PING sent now: its answer comes after every message Redis published before it, and
        only if the connection still works (a liveness probe)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._outbox is None:
            future.set_exception(RedisGone("not connected to Redis"))
            return future
        self._send("PING")
        self._unsettled = False
        self._pongs.append([future])
        return future

    def _send(self, *args: Arg) -> None:
        if self._outbox is not None:
            self._unsettled = True
            self._outbox.add(hiredis.pack_command(args))  # type: ignore[arg-type]  # stub: a 1-tuple

    async def _read(self, reader: asyncio.StreamReader, parser: hiredis.Reader) -> None:
        reply: RespItem | Literal[False]  # what gets() returns (False: no whole reply yet); its stub says Any
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
            self._drop_outbox()
            self._writer, writer = None, self._writer
            if writer is not None:
                writer.close()
            while self._pongs:
                for future in self._pongs.popleft():
                    if not future.done():
                        future.set_exception(RedisGone("the connection to Redis was lost"))
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(None)

    def _dispatch(self, reply: RespItem) -> None:
        if not isinstance(reply, list):  # in subscribe mode everything but an error reply is an array
            raise RedisGone(f"Redis refused a subscriber command: {reply!r}")  # ends the connection
        kind = reply[0]
        if kind == b"message":
            channel, data = reply[1], reply[2]
            if isinstance(channel, bytes) and isinstance(data, bytes):  # always, for a message
                self._on_message(channel, data)
        elif kind == b"pong":
            for future in self._pongs.popleft():
                if not future.done():
                    future.set_result(None)

    def _drop_outbox(self) -> None:
        if self._outbox is not None:
            self._outbox.drop()
            self._outbox = None

    def abort(self) -> None:
        """Close now with a reset, dropping what was not sent (`close` then finishes the job)."""
        self._drop_outbox()
        _abort(self._writer)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._drop_outbox()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Close with a reset that drops what the kernel has not sent yet: a command already
    answered as failed must not reach Redis later, when a cut link comes back (SO_LINGER 0)."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # nor what asyncio still buffers
