"""One hub's event handlers in order (first match wins, as in Azure's `eventHandlers`), and the
background work of non-blocking events, which never holds up the fan-out path."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine

from ..protocol.payload import Payload
from .model import ConnectRequest, ConnectResult, EventContext, EventFailed, EventHandler, EventReply, HandlerRule

__all__ = ["HubEvents"]

log = logging.getLogger("fastpush.events")


class HubEvents:
    def __init__(self) -> None:
        self._handlers: list[tuple[HandlerRule, EventHandler]] = []
        self._background: set[asyncio.Task[None]] = set()

    def add(self, rule: HandlerRule, handler: EventHandler, *, first: bool = False) -> None:
        self._handlers.insert(0 if first else len(self._handlers), (rule, handler))

    def _system(self, name: str) -> EventHandler | None:
        return next((h for rule, h in self._handlers if rule.wants_system(name)), None)

    def _user(self, name: str) -> EventHandler | None:
        return next((h for rule, h in self._handlers if rule.wants_user_event(name)), None)

    @property
    def wants_connect(self) -> bool:
        return self._system("connect") is not None

    def handles_user_event(self, name: str) -> bool:
        return self._user(name) is not None

    async def connect(self, ctx: EventContext, request: ConnectRequest) -> ConnectResult | None:
        handler = self._system("connect")
        return None if handler is None else await handler.connect(ctx, request)

    def connected(self, ctx: EventContext) -> None:
        handler = self._system("connected")
        if handler is not None:
            self._spawn(handler.connected(ctx), ctx, "connected")

    def disconnected(self, ctx: EventContext, reason: str) -> None:
        handler = self._system("disconnected")
        if handler is not None:
            self._spawn(handler.disconnected(ctx, reason), ctx, "disconnected")

    async def user_event(self, ctx: EventContext, name: str, payload: Payload) -> EventReply | None:
        handler = self._user(name)
        return None if handler is None else await self._guarded(handler.user_event(ctx, name, payload), ctx, name)

    async def invoke(self, ctx: EventContext, name: str, payload: Payload | None,
                     invocation_id: str) -> EventReply | None:
        """An invocation goes to the handler of the user event of its name."""
        handler = self._user(name)
        if handler is None:
            return None
        return await self._guarded(handler.invoke(ctx, name, payload, invocation_id), ctx, name)

    async def _guarded(self, answer: Awaitable[EventReply | None], ctx: EventContext, name: str) -> EventReply | None:
        try:
            return await answer
        except EventFailed:
            raise
        except Exception as exc:  # an in-process callback's bug must not take the connection's loop down
            log.exception("hub %s: the %s event handler raised", ctx.hub, name)
            raise EventFailed(f"the event handler raised {type(exc).__name__}") from None

    def _spawn(self, coro: Coroutine[object, None, None], ctx: EventContext, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(lambda t: self._finished(t, ctx, name))

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a user event's task until it ends, so shutdown can wait for it."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _finished(self, task: asyncio.Task[None], ctx: EventContext, name: str) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub %s: %s event for %s failed: %s", ctx.hub, name, ctx.connection_id, task.exception())

    async def drain(self, timeout: float) -> None:
        """At shutdown: let pending notifications finish for a moment, then cancel the rest."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background), timeout=1.0)
