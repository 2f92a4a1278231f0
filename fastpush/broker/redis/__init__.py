"""Many nodes serving one set of hubs through a real Redis server.

A node publishes each operation once; every node it concerns applies it to its own connections
(`bus`). What callers ask about the cluster lives in Redis (`registry`). A reliable session can
move to the node its client recovered onto (`handover`). While Redis is unreachable, local
traffic goes on, cluster operations are refused with BrokerUnavailable (REST: 503), and the node
reconnects with backoff, then subscribes and registers its connections again; it takes operations
again once the nodes it knew are subscribed again too, so none it accepts misses their clients.
A link cut between here and Redis sends no reset: both connections are pinged every PROBE_SECONDS,
and one silent for PROBE_TIMEOUT counts as lost (connecting has its own limit, CONNECT_TIMEOUT in
`link`); what the server then does with its clients is the Server's broker-loss timeout.
With a redis+sentinel:// URL the master comes from Sentinel, and a switch ends the backoff (`sentinel`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import hiredis

from ...lastvalue import LastValuePolicy
from ...metrics.counters import COUNTERS
from ...ops import Op, Operation, Query, Question
from ..base import BrokerHandler, BrokerHealth, Member, SessionReservation
from ..resp import RedisGone
from .bus import OperationBus
from .handover import SessionHandover
from .lastvalue import RedisLastValues
from .link import Link, log_failure, unavailable
from .registry import ClusterRegistry
from .wire import WIRE_VERSION, OtherWireVersion

__all__ = ["RedisBroker"]

log = logging.getLogger("fastpush.broker")
R = TypeVar("R")
PROBE_SECONDS = 1.0  # how often both connections to Redis are pinged
PROBE_TIMEOUT = 3.0  # a ping unanswered this long: Redis is unreachable, the connections are dropped


class RedisBroker:
    name = "redis"

    def __init__(self, url: str, *, prefix: str = "fastpush", node_ttl: float = 10.0,
                 confirm_timeout: float = 5.0,
                 last_value_policy: Callable[[str], LastValuePolicy | None] = lambda hub: None) -> None:
        self.url = url
        self._link = Link(url, prefix)
        self._ttl = node_ttl
        self._registry = ClusterRegistry(self._link, node_ttl)
        self._bus = OperationBus(self._link, self._registry, confirm_timeout)
        self._handover = SessionHandover(self._link, self._bus, self._registry)
        # The last-value cache, in Redis (a hub's lastValueGroups: `last_value_policy`).
        self.last_values = self._bus.cached_groups = RedisLastValues(self._link, last_value_policy)
        self._registry.answer_last_value = self.last_values.answer
        self._handler: BrokerHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def node_id(self) -> str:
        return self._link.node_id

    @property
    def healthy(self) -> bool:
        return self._link.healthy

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self, handler: BrokerHandler) -> None:
        self._handler = self._bus.handler = self._handover.handler = handler
        await self._connect()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep_alive()), loop.create_task(self._watch()),
                       loop.create_task(self._probe())]
        if self._link.sentinels is not None:
            self._tasks.append(loop.create_task(self._link.sentinels.follow_switches(self._link.master_moved)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._link.healthy:
            with contextlib.suppress(RedisGone, OSError):  # stopping anyway: its entries expire
                await self._registry.leave()
        await self._link.close()
        self._link.healthy = False

    def health(self) -> BrokerHealth:
        link = self._link
        return {"broker": self.name, "node": link.node_id, "healthy": link.healthy, "error": link.last_error}

    async def _connect(self, again: bool = False) -> None:
        """Connect, subscribe, register; after an outage (`again`) also wait for the other nodes."""
        link = self._link
        assert self._handler is not None
        try:
            await link.connect(self._bus.on_message)
            await link.barrier()
            if not again:
                await self._refuse_other_versions()
            await self._registry.register(self._handler.local_hubs())
            if again:
                await self._registry.await_peers(self._ttl)
        except hiredis.ReplyError as exc:  # e.g. READONLY: the master became a replica meanwhile
            raise RedisGone(f"Redis refused: {exc}") from None
        link.healthy, link.last_error = True, None
        self.last_values.generation += 1
        log.info("node %s connected to %s (wire version %d)", link.node_id, link.describe(), WIRE_VERSION)

    async def _refuse_other_versions(self) -> None:
        """Joining a Redis whose live nodes speak another wire version would split the cluster in
        two that drop each other's messages: refuse to start (docs/operations.md: upgrades)."""
        foreign = await self._registry.foreign_nodes()
        if foreign:
            await self._link.close()
            seen = ", ".join(f"{node} ({version})" for node, version in sorted(foreign.items())[:5])
            raise OtherWireVersion(f"{len(foreign)} live node(s) on {self._link.describe()} speak another wire "
                                   f"version than this one ({WIRE_VERSION}): {seen}; nodes of different wire versions "
                                   "cannot share a Redis: stop them first, or give this cluster a Redis server of "
                                   "its own")

    async def _watch(self) -> None:
        """When Redis goes away: mark unhealthy, reconnect with backoff, resubscribe, re-register."""
        link = self._link
        while True:
            assert link.subscriber is not None and link.commands is not None
            closed = [c for c in (link.subscriber.closed, link.commands.closed) if c is not None]
            await asyncio.wait(closed, return_when=asyncio.FIRST_COMPLETED)
            link.healthy, link.last_error = False, "lost the connection to Redis"
            log.error("node %s lost Redis; refusing cluster operations until it is back", link.node_id)
            self._bus.fail_pending()
            await link.close()
            delay = 0.1
            while not link.healthy:
                try:
                    await self._connect(again=True)
                except (OSError, RedisGone) as exc:
                    link.last_error = f"reconnecting to Redis failed: {exc}"
                    await link.close()  # whatever the failed attempt had opened
                    await link.pause(delay)
                    delay = min(delay * 2, 5.0)
            COUNTERS.broker_reconnected()

    async def _probe(self) -> None:
        """Drop connections to a Redis that stopped answering (a partition): `_watch` takes over.
        Also while reconnecting, so that a link cut then cannot leave `_connect` waiting forever."""
        link = self._link
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            if link.commands is None or not link.commands.connected:
                continue
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await asyncio.gather(link.run("PING"), link.ping_subscriber())
            except TimeoutError:
                log.error("node %s: Redis did not answer a ping in %g s; dropping the connection",
                          link.node_id, PROBE_TIMEOUT)
                await link.abort()  # what it has not sent (a send already answered 503) never arrives
            except (RedisGone, OSError):
                pass  # the connection broke: `_watch` has seen it too

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            if not self._link.healthy:
                continue
            try:
                await self._registry.announce()
                await self._registry.forget_dead_nodes()
            except (RedisGone, OSError) as exc:
                log.warning("node %s: keep-alive failed: %s", self._link.node_id, exc)

    # --- the cluster ------------------------------------------------------------------------
    # Every Operation is a member of the Op union (every Question of Query), and the answer has
    # the result type its class names (fastpush.ops): the casts restate that.
    async def publish(self, op: Operation[R]) -> R:
        return cast(R, await self._bus.publish(cast(Op, op)))

    async def ask(self, question: Question[R]) -> R:
        return cast(R, await self._registry.answer(cast(Query, question)))

    async def prepare_connection(self, hub: str, user_id: str | None, groups: tuple[str, ...]) -> tuple[str, ...]:
        link = self._link
        link.check()
        # The hub's channel is in force before the user's groups are read: a change to them made
        # after the read then reaches this node as an operation, so none falls between the two.
        link.subscribe(link.channel("h", hub.lower()))
        user_groups: tuple[str, ...] = ()
        if user_id is not None:
            await link.barrier()
            user_groups = await self._registry.user_groups(hub, user_id)
        for group in (*groups, *user_groups):
            link.subscribe(link.group_channel(hub, group))
        await link.barrier()
        return user_groups

    async def take_session(self, hub: str, connection_id: str, token: str | None,
                           subprotocol: str | None) -> SessionReservation | None:
        return await self._handover.take(hub, connection_id, token, subprotocol)

    async def move_session(self, reservation: SessionReservation, arrived: Callable[[], None]) -> bytes | None:
        return await self._handover.move(reservation, arrived)

    def begin_drain(self) -> None:
        self._registry.draining = True
        if self._link.healthy:  # else announced on reconnecting, by the keep-alive's next round
            self._link.execute("SET", self._link.key("draining", self._link.node_id), b"1",
                               "PX", int(self._ttl * 1000)).add_done_callback(log_failure)

    async def others_serving(self) -> bool:
        self._link.check()
        try:
            return await self._registry.others_serving()
        except (RedisGone, OSError) as exc:
            raise unavailable(exc) from None

    # --- this node's connections (the hubs' Registry) ---------------------------------------
    def connection_added(self, hub: str, member: Member) -> None:
        self._registry.connection_added(hub, member)

    def connection_removed(self, hub: str, member: Member) -> None:
        self._registry.connection_removed(hub, member)
        self._handover.forget(hub, member.connection_id)

    def group_joined(self, hub: str, member: Member, group: str, first: bool) -> asyncio.Future[Any] | None:
        return self._registry.group_joined(hub, member, group, first)

    def group_left(self, hub: str, member: Member, group: str, last: bool) -> None:
        self._registry.group_left(hub, member, group, last)

    def roles_changed(self, hub: str, member: Member) -> None:
        self._registry.roles_changed(hub, member)
