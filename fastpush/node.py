"""One fastpush process: its hubs (named case-insensitively) and the broker that joins it to a cluster.

Everything that acts on hubs goes through here: `submit` an operation or `ask` a question
(fastpush.ops), and the broker applies it on every node concerned (this one at once with
MemoryBroker), calling back `apply` / `answer` on each. The Node is the broker's handler
(fastpush.broker.base.BrokerHandler); the hubs never see the broker except as the `Registry`
they report their own connections to.

A hub is registered (listed by `hubs()`, walked by the heartbeat and at shutdown) while it holds
something (see Hub.is_empty). An empty hub is dropped, so names a client or caller merely
mentioned cost nothing: only an authenticated client, an embedding program or an operation that
leaves a record (a user added to a group) registers one. A dropped hub that something still
holds (an upgrade waiting for its connect event, an embedding HubApi) stays findable until it is
freed, so there is never more than one live Hub object for a name.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from .broker.base import Broker, LocalHub
from .broker.memory import MemoryBroker
from .hub import Census, Hub
from .metrics.counters import COUNTERS
from .ops import LastValue, Op, Operation, Query, Question
from .outcome import Outcome

__all__ = ["Node", "SessionKeeper"]

R = TypeVar("R")


class SessionKeeper(Protocol):
    """What the node asks about the reliable sessions its hubs hold, when another node takes one
    (fastpush.broker.redis.handover): the application's client connections answer."""

    def describe(self, hub: Hub, connection_id: str, token: str | None, subprotocol: str | None) -> bytes | None:
        """Its identity, if `token` and `subprotocol` may resume it (fastpush.broker.base.BrokerHandler)."""

    def give_up(self, hub: Hub, connection_id: str) -> bytes | None:
        """Its whole state; it ends here, moved."""


class Node:
    def __init__(self, broker: Broker | None = None, *, configure: Callable[[Hub], None] | None = None,
                 sessions: SessionKeeper | None = None) -> None:
        self._hubs: dict[str, Hub] = {}
        self._unregistered: weakref.WeakValueDictionary[str, Hub] = weakref.WeakValueDictionary()
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        self._configure = configure  # applies hub settings (event handlers, policies) to a new hub
        self._sessions = sessions
        self._census = Census()

    async def start(self) -> None:
        await self.broker.start(self)

    async def stop(self) -> None:
        await self.broker.stop()

    # --- acting on the cluster --------------------------------------------------------------
    def submit(self, op: Operation[R]) -> Outcome[R]:
        """Apply `op` wherever it concerns connections (see fastpush.ops for what it returns).
        A cluster broker's publish is timed, until it has taken (or confirmed) it (metrics)."""
        outcome = self.broker.publish(op)
        if isinstance(outcome, Awaitable):
            return _timed(outcome)
        return outcome

    def ask(self, question: Question[R]) -> Outcome[R]:
        return self.broker.ask(question)

    # --- the broker's handler ---------------------------------------------------------------
    def apply(self, op: Op) -> object:
        """An operation for this node's connections. It registers no hub unless it leaves
        something in it (a user->group record), and drops one it emptied."""
        hub = self.lookup(op.hub)
        try:
            return hub.apply(op)
        finally:
            self.settle(hub)

    def answer(self, question: Query) -> object:
        hub = self.find(question.hub)
        if hub is None:
            if isinstance(question, LastValue):  # whether the group is cached is the hub's setting
                return self.lookup(question.hub).answer(question)
            return Hub(question.hub, self.broker).answer(question)  # what a hub with nothing answers
        return hub.answer(question)

    def describe_session(self, hub: str, connection_id: str, token: str | None,
                         subprotocol: str | None) -> bytes | None:
        found = self.find(hub)
        if found is None or self._sessions is None:
            return None
        return self._sessions.describe(found, connection_id, token, subprotocol)

    def give_up_session(self, hub: str, connection_id: str) -> bytes | None:
        found = self.find(hub)
        if found is None or self._sessions is None:
            return None
        return self._sessions.give_up(found, connection_id)

    def local_hubs(self) -> Iterable[LocalHub]:
        for hub in self.hubs():
            yield LocalHub(hub.name, tuple(hub.connections), hub.user_groups)

    # --- hubs -------------------------------------------------------------------------------
    def hub(self, name: str) -> Hub:
        """The hub, registered (made on first use): for authenticated clients and the embedding API."""
        key = name.lower()
        hub = self._hubs.get(key)
        if hub is None:
            hub = self._unregistered.pop(key, None) or self._new(name)
            self._hubs[key] = hub
        return hub

    def find(self, name: str) -> Hub | None:
        """The live hub of that name, if there is one; makes nothing."""
        key = name.lower()
        return self._hubs.get(key) or self._unregistered.get(key)

    def lookup(self, name: str) -> Hub:
        """The live hub, or a new unregistered one that is freed when its caller lets go of it."""
        hub = self.find(name)
        if hub is None:
            hub = self._unregistered[name.lower()] = self._new(name)
        return hub

    def settle(self, hub: Hub) -> None:
        """Register a hub that holds something; drop one that holds nothing."""
        key = hub.name.lower()
        if hub.is_empty:
            if self._hubs.get(key) is hub:
                del self._hubs[key]
                self._unregistered[key] = hub
        elif self._hubs.get(key) is not hub:
            self._unregistered.pop(key, None)
            self._hubs[key] = hub

    def drop_empty_hubs(self) -> None:
        """Catch-all for held hubs a connection joined while they were unregistered."""
        for hub in [*self._hubs.values(), *self._unregistered.values()]:
            self.settle(hub)

    def hubs(self) -> list[Hub]:
        return list(self._hubs.values())

    @property
    def connection_count(self) -> int:
        """Every hub's connections, registered or not: read on each upgrade, so kept as one count."""
        return self._census.connections

    def _new(self, name: str) -> Hub:
        hub = Hub(name, self.broker, self._census)
        if self._configure is not None:
            self._configure(hub)
        hub.on_empty = self.settle
        return hub


async def _timed(publishing: Awaitable[R]) -> R:
    started = time.perf_counter()
    result = await publishing
    COUNTERS.broker_published(time.perf_counter() - started)
    return result
