"""In-process event handlers for embedding: the same events as Python callables, sync or async."""
from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import TypeVar

import msgspec

from ..protocol.payload import DataType, Payload
from .cloudevents import invocation_error
from .model import (
    ConnectCallback,
    ConnectedCallback,
    ConnectRequest,
    ConnectResult,
    DisconnectedCallback,
    EventContext,
    EventFailed,
    EventRejected,
    EventReply,
    UserEventCallback,
)

__all__ = ["CallbackHandler"]

_json = msgspec.json.Encoder().encode
_T = TypeVar("_T")


async def _settle(result: _T | Awaitable[_T]) -> _T:
    """A callback's answer, awaited first if it is awaitable."""
    if inspect.isawaitable(result):
        awaited: _T = await result
        return awaited
    return result


def _reply(value: object) -> EventReply | None:
    """A callback may answer with an EventReply, or just the data: str (text), bytes (binary),
    anything else JSON-serializable (json); None sends nothing back."""
    if value is None or isinstance(value, EventReply):
        return value
    if isinstance(value, Payload):
        return EventReply(value)
    if isinstance(value, str):
        return EventReply(Payload(DataType.TEXT, value.encode()))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return EventReply(Payload(DataType.BINARY, bytes(value)))
    return EventReply(Payload(DataType.JSON, _json(value)))


class CallbackHandler:
    def __init__(self, on_connect: ConnectCallback | None = None, on_connected: ConnectedCallback | None = None,
                 on_disconnected: DisconnectedCallback | None = None, on_event: UserEventCallback | None = None):
        self._on_connect = on_connect
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_event = on_event

    @property
    def system_events(self) -> tuple[str, ...]:
        pairs = (("connect", self._on_connect), ("connected", self._on_connected),
                 ("disconnected", self._on_disconnected))
        return tuple(name for name, fn in pairs if fn is not None)

    async def connect(self, ctx: EventContext, request: ConnectRequest) -> ConnectResult | None:
        """Raise EventRejected to refuse; return a ConnectResult (or None) to accept."""
        # Only the events in system_events (or, for user events, the rule built from on_event)
        # are dispatched here; a missing callback answers as no handler at all would.
        if self._on_connect is None:
            return None
        return await _settle(self._on_connect(ctx, request))

    async def connected(self, ctx: EventContext) -> None:
        if self._on_connected is not None:
            await _settle(self._on_connected(ctx))

    async def disconnected(self, ctx: EventContext, reason: str) -> None:
        if self._on_disconnected is not None:
            await _settle(self._on_disconnected(ctx, reason))

    async def user_event(self, ctx: EventContext, name: str, payload: Payload) -> EventReply | None:
        """on_event answers as an upstream does: what to send back, or EventRejected(status) for an
        error status (an InternalServerError ack)."""
        if self._on_event is None:
            return None
        try:
            return _reply(await _settle(self._on_event(ctx, name, payload)))
        except EventRejected as exc:
            raise EventFailed(f"the event handler refused the event ({exc.status}): {exc.message}") from None

    async def invoke(self, ctx: EventContext, name: str, payload: Payload | None,
                     invocation_id: str) -> EventReply | None:
        """An invocation is the user event of its name, given to on_event: its answer is the
        invokeResponse's data, and EventRejected(status, message) the error an upstream's status
        would give (400 BadRequest with the message, 5xx InternalServerError, ...). No data is
        an empty binary payload. Cancelling the invocation cancels an async on_event."""
        if self._on_event is None:
            return None
        try:
            return _reply(await _settle(self._on_event(ctx, name, payload or Payload(DataType.BINARY, b""))))
        except EventRejected as exc:
            raise invocation_error(exc.status, exc.message, name) from None
