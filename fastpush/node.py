"""The hubs of one fastpush process. Hubs are created on first use and named case-insensitively."""
from __future__ import annotations

from collections.abc import Callable

from .broker.base import Broker
from .broker.memory import MemoryBroker
from .hub import Hub

__all__ = ["Node"]


class Node:
    def __init__(self, configure: Callable[[Hub], None] | None = None, broker: Broker | None = None) -> None:
        self._hubs: dict[str, Hub] = {}
        self.broker = broker if broker is not None else MemoryBroker()
        self._configure = configure  # applies hub settings (event handlers, policies) to a new hub

    def hub(self, name: str) -> Hub:
        key = name.lower()
        hub = self._hubs.get(key)
        if hub is None:
            self._hubs[key] = hub = Hub(name, self.broker)
            if self._configure is not None:
                self._configure(hub)
        return hub

    def hubs(self) -> list[Hub]:
        return list(self._hubs.values())

    @property
    def connection_count(self) -> int:
        return sum(h.connection_count for h in self._hubs.values())
