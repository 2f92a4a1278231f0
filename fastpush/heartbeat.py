"""WebSocket keep-alive: ping the clients that have been quiet for their hub's interval, drop the
ones silent far longer (a peer gone without a FIN).

One timer serves every connection. Each hub is swept at its own interval: Azure's per-hub
`webSocketKeepAliveIntervalInSeconds`, else the server's `--keepalive`. A hub whose interval is
longer than a third of `--idle-timeout` gets three intervals of silence before a drop, so its
clients are pinged (twice) before they are given up.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable

from .hub import Hub

__all__ = ["Heartbeat", "idle_timeout"]

log = logging.getLogger("fastpush")


def idle_timeout(keepalive: float, server_idle_timeout: float) -> float:
    """How long a client of a hub pinging every `keepalive` seconds may be silent."""
    return max(server_idle_timeout, 3 * keepalive)


class Heartbeat:
    def __init__(self, hubs: Callable[[], Iterable[Hub]], keepalive: float, idle: float,
                 configured: Iterable[float] = ()):
        self._hubs = hubs
        self._keepalive = keepalive
        self._idle = idle
        # The timer's step: the shortest interval any hub can have (configured ones are known at start).
        self._tick = min((keepalive, *configured))
        self._last_sweep: weakref.WeakKeyDictionary[Hub, float] = weakref.WeakKeyDictionary()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Sweep each hub whose interval has passed since its last sweep."""
        for hub in self._hubs():
            interval = hub.keepalive_seconds or self._keepalive
            # A little early rather than a whole tick late (timers wake a moment after they are due).
            if now - self._last_sweep.get(hub, -interval) >= interval - self._tick / 2:
                self._last_sweep[hub] = now
                _sweep_hub(hub, now, interval, idle_timeout(interval, self._idle))


def _sweep_hub(hub: Hub, now: float, keepalive: float, idle: float) -> None:
    for conn in tuple(hub.connections):
        transport = conn.transport
        if transport is None or transport.is_disconnected:
            continue
        quiet = now - conn.last_seen
        if quiet > idle:
            log.info("connection %s silent for %.0f s: dropping it", conn.connection_id, quiet)
            transport.disconnect(False)
        elif quiet >= keepalive:
            transport.send_ping()
