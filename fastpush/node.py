"""The hubs of one fastpush process. Hubs are created on first use and named case-insensitively."""
from __future__ import annotations

from .hub import Hub

__all__ = ["Node"]


class Node:
    def __init__(self) -> None:
        self._hubs: dict[str, Hub] = {}

    def hub(self, name: str) -> Hub:
        key = name.lower()
        hub = self._hubs.get(key)
        if hub is None:
            self._hubs[key] = hub = Hub(name)
        return hub

    def hubs(self) -> list[Hub]:
        return list(self._hubs.values())

    @property
    def connection_count(self) -> int:
        return sum(h.connection_count for h in self._hubs.values())
