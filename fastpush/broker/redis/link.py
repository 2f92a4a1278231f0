"""This node's two connections to Redis and the names it uses there, shared by the broker's parts.

Keys and channels are `{prefix}:{kind}:{...}`; hub names are lowercased, since hubs are named
case-insensitively. On a database other than 0 the prefix names it (`fastpush:db3`): Redis keeps
keys per database but pub/sub channels per server, so without it two clusters on two databases
of one server would hear each other's messages. One command socket carries every command, in the order issued (so one
node's publishes stay in order); the subscriber socket holds this node's subscriptions. With a
redis+sentinel:// URL both go to the master Sentinel names, once it says it is one (`sentinel`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import hiredis

from ..errors import BrokerUnavailable
from ..resp import Arg, RedisAddress, RedisGone, RespConnection, RespReply, SubscriberConnection
from .scripts import SCRIPTS
from .sentinel import Sentinels, is_sentinel_url

__all__ = ["Link", "log_failure", "unavailable"]

log = logging.getLogger("fastpush.broker")
OLD_MASTER_PAUSE_MS = 5000  # publishing paused on a master Sentinel replaced, for nodes yet to hear of it
CONNECT_TIMEOUT = 5.0  # to open both connections and log in (a cut link leaves a connect waiting minutes)
LEAVE_SECONDS = 0.5  # to pause it and read what it sent before: longer, it is gone or unreachable


def describe_url(url: str) -> str:
    """Where a --redis-url points, without its passwords (for logs and error messages)."""
    if is_sentinel_url(url):
        return f"the Redis {Sentinels.from_url(url).describe()}"
    address = RedisAddress.from_url(url)
    return f"Redis at {address.host}:{address.port}"


class Link:
    def __init__(self, url: str, prefix: str) -> None:
        self.sentinels = Sentinels.from_url(url) if is_sentinel_url(url) else None
        self._fixed = None if self.sentinels else RedisAddress.from_url(url)
        self.address = self._fixed  # the server connected to (with Sentinel: the master it named last)
        db = self.sentinels.db if self.sentinels else self._fixed.db if self._fixed else 0
        self.prefix = f"{prefix}:db{db}" if db else prefix
        self.node_id = secrets.token_hex(6)
        self.commands: RespConnection | None = None
        self.subscriber: SubscriberConnection | None = None
        self.channels: set[bytes] = set()  # what this node is subscribed to, restored on reconnect
        self._scripts: dict[str, bytes] = {}
        self.healthy = False
        self.last_error: str | None = None
        self.collected: list[asyncio.Future[RespReply]] | None = None  # see write
        self._moved = asyncio.Event()  # Sentinel announced another master: stop waiting to reconnect

    def describe(self) -> str:
        where = f"{self.address.host}:{self.address.port}" if self.address else "(not connected)"
        return f"Redis at {where}" if self.sentinels is None else \
            f"Redis {self.sentinels.describe()}, at {where}"

    async def connect(self, on_message: Callable[[bytes, bytes], None]) -> None:
        address = await self.sentinels.master() if self.sentinels else self._fixed
        assert address is not None
        commands = RespConnection(address)
        subscriber = SubscriberConnection(address, on_message)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await commands.connect()
                if self.sentinels is not None:
                    await _check_master(commands, address)
                await subscriber.connect()
        except TimeoutError:
            await commands.close()
            await subscriber.close()
            raise RedisGone(f"{address.host}:{address.port}: no answer in {CONNECT_TIMEOUT:g} s") from None
        except BaseException:
            await commands.close()
            await subscriber.close()
            raise
        self.commands, self.subscriber, self.address = commands, subscriber, address
        for name, source in SCRIPTS.items():
            sha = await commands.execute("SCRIPT", "LOAD", source)
            assert isinstance(sha, bytes)
            self._scripts[name] = sha
        self.channels.add(self.channel("n", self.node_id))
        subscriber.subscribe(*self.channels)  # after a reconnect: everything this node had

    def master_moved(self, address: RedisAddress) -> None:
        """Sentinel switched to another master: leave this one (if still on it) and reconnect now."""
        if address == self.address and self.healthy:
            return  # already there: this node found the new master before the announcement came
        log.warning("node %s: Sentinel moved the Redis master to %s:%d", self.node_id, address.host, address.port)
        self._moved.set()
        asyncio.get_running_loop().create_task(self._leave_unless_on(address))

    async def _leave_unless_on(self, address: RedisAddress) -> None:
        """Leave the old master, which may still be up (a planned failover, a partition): first
        pause its publishing, so a node that has not heard of the switch yet gets no answer to a
        send there (it fails, 503, once that node leaves) instead of an OK whose message the nodes
        already gone never see; then read what it published before the pause. The broker's watch
        notices the close and reconnects."""
        if self.address == address:  # checked now: a reconnect may have reached it meanwhile
            return
        commands = self.commands
        if commands is not None and commands.connected:
            try:
                async with asyncio.timeout(LEAVE_SECONDS):
                    await commands.execute("CLIENT", "PAUSE", OLD_MASTER_PAUSE_MS, "WRITE")
                    await self.ping_subscriber()
            except (OSError, hiredis.ReplyError) as exc:  # gone already (TimeoutError included), or not allowed
                log.info("node %s: did not pause the old master's publishing: %s", self.node_id, exc or "no answer")
        await self.close()

    async def pause(self, seconds: float) -> None:
        """Wait before connecting again: `seconds`, or less if Sentinel names a new master meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._moved.wait(), seconds)
        self._moved.clear()

    async def close(self) -> None:
        for conn in (self.commands, self.subscriber):
            if conn is not None:
                await conn.close()

    async def abort(self) -> None:
        """Close both connections with a reset, dropping what was not sent yet (a silent Redis)."""
        for conn in (self.commands, self.subscriber):
            if conn is not None:
                conn.abort()
        await self.close()

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

    def ping_subscriber(self) -> asyncio.Future[None]:
        """A PING on the subscriber connection, sent now (a barrier may share an earlier one or
        need none): its answer comes after every message Redis published before it, and proves
        the connection alive."""
        assert self.subscriber is not None
        return self.subscriber.ping()

    # --- commands ----------------------------------------------------------------------------
    def check(self) -> None:
        if not self.healthy:
            raise BrokerUnavailable(f"The cluster broker (Redis) is unavailable: {self.last_error}")

    def execute(self, *args: Arg | None) -> asyncio.Future[RespReply]:
        assert self.commands is not None
        return self.commands.execute(*args)

    async def run(self, *args: Arg | None) -> RespReply:
        return await self.execute(*args)

    def script(self, name: str, numkeys: int, *args: Arg | None) -> asyncio.Future[RespReply]:
        return self.execute("EVALSHA", self._scripts[name], numkeys, *args)

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


async def _check_master(commands: RespConnection, address: RedisAddress) -> None:
    """A Sentinel may name a master that has just become a replica (or not yet a master): writing
    there would fail, and its subscribers hear nothing the master publishes."""
    try:
        role = await commands.execute("ROLE")
    except hiredis.ReplyError as exc:
        raise RedisGone(f"{address.host}:{address.port} did not say its ROLE: {exc}") from None
    if not (isinstance(role, list) and role and role[0] == b"master"):
        what = role[0] if isinstance(role, list) and role else role
        raise RedisGone(f"{address.host}:{address.port}, named by Sentinel, is not a master ({what!r})")


def unavailable(exc: RedisGone | OSError) -> BrokerUnavailable:
    return BrokerUnavailable(f"The cluster broker (Redis) is unavailable: {exc}")
