"""WebSocket keep-alive: ping the clients that have been quiet for their hub's interval, drop the
ones silent far longer (a peer gone without a FIN).

One timer serves every connection. Each hub is swept at its own interval: Azure's per-hub
`webSocketKeepAliveIntervalInSeconds`, else the server's `--keepalive`. A hub whose interval is
longer than a third of `--idle-timeout` gets three intervals of silence before a drop, so its
clients are pinged (twice) before they are given up.

A sweep is spread over its interval, a slice of the hub's connections per tick (a second at most):
clients that connected or last spoke together (a deploy's reconnect storm, a benchmark) would
otherwise all be pinged in one loop turn, and their pongs read in the next ones, in the middle of
whatever the node was delivering.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .fanout import Connection
from .hub import Hub

__all__ = ["Heartbeat", "idle_timeout"]

log = logging.getLogger("fastpush")

MAX_TICK = 1.0  # seconds between two slices of a sweep


def idle_timeout(keepalive: float, server_idle_timeout: float) -> float:
    """How long a client of a hub pinging every `keepalive` seconds may be silent."""
    return max(server_idle_timeout, 3 * keepalive)


@dataclass
class _Sweep:
    """One pass over a hub's connections, as they were when it began (their ids: a connection that
    closes meanwhile is not kept alive by the sweep, and is skipped)."""

    began: float
    interval: float
    connection_ids: tuple[str, ...]
    done: int = 0


class Heartbeat:
    def __init__(self, hubs: Callable[[], Iterable[Hub]], keepalive: float, idle: float,
                 configured: Iterable[float] = ()):
        self._hubs = hubs
        self._keepalive = keepalive
        self._idle = idle
        # The timer's step: the shortest interval any hub can have (configured ones are known at start).
        self._tick = min((MAX_TICK, keepalive, *configured))
        self._sweeps: dict[Hub, _Sweep] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Visit the next slice of each hub's current sweep; begin a hub's next sweep once its interval
        has passed since the last began."""
        sweeps: dict[Hub, _Sweep] = {}
        for hub in self._hubs():
            interval = hub.keepalive_seconds or self._keepalive
            current = self._sweeps.get(hub)
            # A little early rather than a whole tick late (timers wake a moment after they are due).
            if current is None or now - current.began >= interval - self._tick / 2:
                current = _Sweep(now, interval, tuple(hub.connection_ids))
            sweeps[hub] = current  # a hub gone from the node is forgotten with its sweep
            # the share of the sweep due by the next tick
            share = min(1.0, (now - current.began + self._tick) / current.interval)
            upto = math.ceil(share * len(current.connection_ids))
            if upto > current.done:
                visiting = (hub.connection(cid) for cid in current.connection_ids[current.done:upto])
                _visit(visiting, now, interval, idle_timeout(interval, self._idle))
                current.done = upto
        self._sweeps = sweeps


def _visit(connections: Iterable[Connection | None], now: float, keepalive: float, idle: float) -> None:
    for conn in connections:
        if conn is None:  # gone since the sweep began
            continue
        transport = conn.transport
        if transport is None or transport.is_disconnected:
            continue
        quiet = now - conn.last_seen
        if quiet > idle:
            log.info("connection %s silent for %.0f s: dropping it", conn.connection_id, quiet)
            transport.disconnect(False)
        elif quiet >= keepalive:
            transport.send_ping()
