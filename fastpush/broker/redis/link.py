"""This node's two connections to Redis and the names it uses there, shared by the broker's parts.

Keys and channels are `{prefix}:{kind}:{...}`; hub names are lowercased, since hubs are named
case-insensitively. One command socket carries every command, in the order issued (so one
node's publishes stay in order); the subscriber socket holds this node's subscriptions.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

from ..errors import BrokerUnavailable
from ..resp import Arg, RedisAddress, RedisGone, RespConnection, RespReply, SubscriberConnection
from .scripts import SCRIPTS

__all__ = ["Link", "log_failure", "unavailable"]

log = logging.getLogger("fastpush.broker")


class Link:
    def __init__(self, url: str, prefix: str) -> None:
        self.address = RedisAddress(url)
        self.prefix = prefix
        self.node_id = secrets.token_hex(6)
        self.commands: RespConnection | None = None
        self.subscriber: SubscriberConnection | None = None
        self.channels: set[bytes] = set()  # what this node is subscribed to, restored on reconnect
        self._scripts: dict[str, bytes] = {}
        self.healthy = False
        self.last_error: str | None = None
        self.collected: list[asyncio.Future[RespReply]] | None = None  # see write

    async def connect(self, on_message: Callable[[bytes, bytes], None]) -> None:
        commands = RespConnection(self.address)
        subscriber = SubscriberConnection(self.address, on_message)
        try:
            await commands.connect()
            await subscriber.connect()
        except BaseException:
            await commands.close()
            await subscriber.close()
            raise
        self.commands, self.subscriber = commands, subscriber
        for name, source in SCRIPTS.items():
            sha = await commands.execute("SCRIPT", "LOAD", source)
            assert isinstance(sha, bytes)
            self._scripts[name] = sha
        self.channels.add(self.channel("n", self.node_id))
        subscriber.subscribe(*self.channels)  # after a reconnect: everything this node had

    async def close(self) -> None:
        for conn in (self.commands, self.subscriber):
            if conn is not None:
                await conn.close()

    # --- names -------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def channel(self, kind: str, *parts: str) -> bytes:
        return self.key(kind, *parts).encode()

    def group_channel(self, hub: str, group: str) -> bytes:
        return self.channel("g", hub.lower(), group)

    # --- subscriptions -----------------------------------------------------------------------
    def subscribe(self, channel: bytes) -> None:
        if channel not in self.channels:
            self.channels.add(channel)
            if self.subscriber is not None:
                self.subscriber.subscribe(channel)

    def unsubscribe(self, channel: bytes) -> None:
        if channel in self.channels:
            self.channels.discard(channel)
            if self.subscriber is not None:
                self.subscriber.unsubscribe(channel)

    def barrier(self) -> asyncio.Future[None]:
        """Completes once every earlier (un)subscription is in force on the server."""
        assert self.subscriber is not None
        return self.subscriber.barrier()

    # --- commands ----------------------------------------------------------------------------
    def check(self) -> None:
        if not self.healthy:
            raise BrokerUnavailable(f"The cluster broker (Redis) is unavailable: {self.last_error}")

    def execute(self, *args: Arg | None) -> asyncio.Future[RespReply]:
        assert self.commands is not None
        return self.commands.execute(*args)

    async def run(self, *args: Arg | None) -> RespReply:
        return await self.execute(*args)

    async def script(self, name: str, numkeys: int, *args: Arg | None) -> RespReply:
        return await self.execute("EVALSHA", self._scripts[name], numkeys, *args)

    def write(self, *args: Arg | None) -> asyncio.Future[RespReply] | None:
        """A write of this node's own state: not awaited by whoever causes it, but collected
        while an operation from another node is applied (its confirmation waits for them).
        While Redis is away nothing is written: everything is written again on reconnecting."""
        if self.commands is None or not self.commands.connected:
            return None
        future = self.commands.execute(*args)
        future.add_done_callback(log_failure)
        if self.collected is not None:
            self.collected.append(future)
        return future


def log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a Redis write failed: %s", future.exception())


def unavailable(exc: RedisGone | OSError) -> BrokerUnavailable:
    return BrokerUnavailable(f"The cluster broker (Redis) is unavailable: {exc}")
