"""In-process event handlers for embedding: the same events as Python callables, sync or async."""
from __future__ import annotations

import inspect

import msgspec

from ..protocol.payload import DataType, Payload
from .model import Callback, ConnectRequest, ConnectResult, EventContext, EventReply

__all__ = ["CallbackHandler"]

_json = msgspec.json.Encoder().encode


async def _call(fn: Callback, *args):
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


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
    def __init__(self, on_connect: Callback | None = None, on_connected: Callback | None = None,
                 on_disconnected: Callback | None = None, on_event: Callback | None = None):
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
        return await _call(self._on_connect, ctx, request)

    async def connected(self, ctx: EventContext) -> None:
        await _call(self._on_connected, ctx)

    async def disconnected(self, ctx: EventContext, reason: str) -> None:
        await _call(self._on_disconnected, ctx, reason)

    async def user_event(self, ctx: EventContext, name: str, payload: Payload) -> EventReply | None:
        return _reply(await _call(self._on_event, ctx, name, payload))
