"""Group presence events: a connection `joined` or `left` a group, told to the event handlers
whose `groupPresenceEvents` ask for it (non-blocking, like `connected`).

A client can join and leave a group as fast as it can send, so what reaches the upstream is
bounded per connection: one event in flight at a time, in order; while one is in flight, the
changes that follow wait, at most one per group, and a join and a leave of the same group that
both wait cancel out (the upstream learns the connection's net membership, never a backlog).
At most MAX_PENDING_CHANGES groups wait per connection; changes beyond that are dropped and
logged.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..logs import RateLimitedLog
from .model import EventContext, EventFailed

__all__ = ["PresenceRule", "PresenceHandler", "GroupPresence", "MAX_PENDING_CHANGES"]

log = logging.getLogger("fastpush.events")

MAX_PENDING_CHANGES = 1000  # groups whose change waits, per connection


@dataclass(frozen=True, slots=True)
class PresenceRule:
    """Which presence events a handler gets: Azure's `groupPresenceEvents` (`eventNames`, and
    `groupFilters` as group matchers; none: every group)."""

    event_names: frozenset[str]
    group_matchers: tuple[Callable[[str], bool], ...] = ()

    def wants(self, name: str, group: str) -> bool:
        return name in self.event_names and (not self.group_matchers
                                             or any(matches(group) for matches in self.group_matchers))


class PresenceHandler(Protocol):
    async def group_presence(self, ctx: EventContext, name: str, group: str) -> None: ...


class _Changes:
    """One connection's changes waiting for the upstream: group -> joined (True) or left (False)."""

    __slots__ = ("ctx", "pending")

    def __init__(self, ctx: EventContext) -> None:
        self.ctx = ctx
        self.pending: dict[str, bool] = {}


class GroupPresence:
    """One hub's presence routes (first match wins, as for every event) and its connections'
    waiting changes. `track` keeps each sending task until it ends (for shutdown)."""

    def __init__(self, track: Callable[[asyncio.Task[None]], None]) -> None:
        self._routes: list[tuple[PresenceRule, PresenceHandler]] = []
        self._track = track
        self._waiting: dict[str, _Changes] = {}  # connection id -> its changes, while a task sends them
        self._dropped = RateLimitedLog(log, "dropped group presence events")

    def add(self, rule: PresenceRule, handler: PresenceHandler) -> None:
        self._routes.append((rule, handler))

    @property
    def wanted(self) -> bool:
        return bool(self._routes)

    def _handler(self, name: str, group: str) -> PresenceHandler | None:
        return next((h for rule, h in self._routes if rule.wants(name, group)), None)

    def changed(self, ctx: EventContext, group: str, joined: bool) -> None:
        """`ctx`'s connection joined (or left) `group`: queue the event if a handler wants it."""
        if self._handler("joined" if joined else "left", group) is None:
            return
        changes = self._waiting.get(ctx.connection_id)
        if changes is None:
            changes = self._waiting[ctx.connection_id] = _Changes(ctx)
            self._track(asyncio.get_running_loop().create_task(self._send(changes)))
        pending = changes.pending
        if group in pending:
            if pending[group] != joined:
                del pending[group]  # joined and left again (or the reverse) while waiting: nothing changed
            return
        if len(pending) >= MAX_PENDING_CHANGES:
            self._dropped.log(logging.WARNING, "hub %(hub)s: connection %(connection_id)s changed more than "
                                               "%(limit)d groups while its presence events waited; dropped one",
                              {"event": "presence_dropped", "hub": ctx.hub, "connection_id": ctx.connection_id,
                               "limit": MAX_PENDING_CHANGES})
            return
        pending[group] = joined

    async def _send(self, changes: _Changes) -> None:
        """Send one connection's changes one at a time, oldest first, until none wait."""
        try:
            await asyncio.sleep(0)  # let the rest of this loop turn's changes join (and cancel out)
            while changes.pending:
                group = next(iter(changes.pending))
                name = "joined" if changes.pending.pop(group) else "left"
                handler = self._handler(name, group)
                if handler is None:
                    continue
                try:
                    await handler.group_presence(changes.ctx, name, group)
                except EventFailed:
                    pass  # logged where it failed
                except Exception:
                    log.exception("hub %s: the %s presence handler raised", changes.ctx.hub, name)
        finally:
            if self._waiting.get(changes.ctx.connection_id) is changes:
                del self._waiting[changes.ctx.connection_id]
