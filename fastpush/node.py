"""The hubs of one fastpush process, named case-insensitively.

A hub is registered (listed by `hubs()`, walked by the heartbeat and at shutdown) while it holds
something (see Hub.is_empty). An empty hub is dropped, so names a client or caller merely
mentioned cost nothing: only an authenticated client, an embedding program or a state-changing
REST call registers one. A dropped hub that something still holds (an upgrade waiting for its
connect event, an embedding HubApi) stays findable until it is freed, so there is never more than
one live Hub object for a name.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

from .broker.base import Broker
from .broker.memory import MemoryBroker
from .hub import Census, Hub

__all__ = ["Node"]

T = TypeVar("T")


class Node:
    def __init__(self, configure: Callable[[Hub], None] | None = None, broker: Broker | None = None) -> None:
        self._hubs: dict[str, Hub] = {}
        self._unregistered: weakref.WeakValueDictionary[str, Hub] = weakref.WeakValueDictionary()
        self.broker = broker if broker is not None else MemoryBroker()
        self._configure = configure  # applies hub settings (event handlers, policies) to a new hub
        self._census = Census()

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
        """The live hub, or a new unregistered one that is freed when its caller lets go of it:
        a call about a hub this node has nothing of may still act cluster-wide (a remote broker)."""
        hub = self.find(name)
        if hub is None:
            hub = self._unregistered[name.lower()] = self._new(name)
        return hub

    def call(self, name: str, act: Callable[[Hub], T]) -> T:
        """`act` on the hub (see lookup), which is registered afterwards if the call left something
        in it (a user->group record) and dropped if it emptied it."""
        hub = self.lookup(name)
        try:
            return act(hub)
        finally:
            self.settle(hub)

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
        """Catch-all for hubs emptied without a connection leaving (an operation applied from the
        cluster), and for held hubs a connection joined while they were unregistered."""
        for hub in [*self._hubs.values(), *self._unregistered.values()]:
            self.settle(hub)

    def hubs(self) -> list[Hub]:
        return list(self._hubs.values())

    @property
    def connection_count(self) -> int:
        """Every hub's connections, registered or not: read on each upgrade, so kept as one count."""
        return self._census.connections

    def _new(self, name: str) -> Hub:
        hub = Hub(name, self.broker)
        if self._configure is not None:
            self._configure(hub)
        hub.on_empty = self.settle
        hub.census = self._census
        return hub
