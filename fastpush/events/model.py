"""What an event says and what a handler may answer: plain values shared by every handler kind."""
from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..protocol.payload import Payload

__all__ = [
    "EventContext", "ConnectRequest", "ConnectResult", "EventReply", "EventRejected", "EventFailed",
    "EventTimedOut", "InvocationFailed",
    "EventHandler", "HandlerRule", "SYSTEM_EVENTS", "PRESENCE_EVENTS",
    "Callback", "ConnectCallback", "ConnectedCallback", "DisconnectedCallback", "UserEventCallback",
]

SYSTEM_EVENTS = ("connect", "connected", "disconnected")
PRESENCE_EVENTS = ("joined", "left")  # group presence events (`azure.webpubsub.gp.<name>`)


@dataclass(slots=True)
class EventContext:
    """Who an event is about; `state` is the connection state string the upstream may set."""

    hub: str
    connection_id: str
    user_id: str | None
    subprotocol: str | None
    state: str | None = None
    next_event_id: int = 0

    def event_id(self) -> str:
        value, self.next_event_id = self.next_event_id, self.next_event_id + 1
        return str(value)


@dataclass(slots=True)
class ConnectRequest:
    claims: dict[str, list[str]]
    query: dict[str, list[str]]
    headers: dict[str, list[str]]
    subprotocols: list[str]
    client_certificates: list[dict[str, str]] = field(default_factory=list)  # Azure's {thumbprint, content}


@dataclass(slots=True)
class ConnectResult:
    """None fields keep what the token said; `roles` replaces them; `groups` are joined if non-empty."""

    user_id: str | None = None
    groups: list[str] | None = None
    roles: list[str] | None = None
    subprotocol: str | None = None
    state: str | None = None


@dataclass(slots=True)
class EventReply:
    """A user event's answer to send back to the client, and a new connection state if set."""

    payload: Payload | None = None
    state: str | None = None


class EventRejected(Exception):
    """A connect handler refused the client: the handshake fails with `status`."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(message or f"rejected with {status}")
        self.status = status
        self.message = message


class EventFailed(Exception):
    """A handler could not process an event (error status, timeout, unreachable, invalid reply)."""


class EventTimedOut(EventFailed):
    """The handler did not answer within the upstream timeout."""


class EventBusy(EventFailed):
    """Not sent: the handler has as many events under way and waiting as it may."""


class InvocationFailed(EventFailed):
    """An invocation's handler failed: the client gets an error invokeResponse with this `name`
    (BadRequest, Forbidden, NotFound, Timeout, InternalServerError) and `message`."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name
        self.message = message


class EventHandler(Protocol):
    async def connect(self, ctx: EventContext, request: ConnectRequest) -> ConnectResult | None: ...
    async def connected(self, ctx: EventContext) -> None: ...
    async def disconnected(self, ctx: EventContext, reason: str) -> None: ...
    async def user_event(self, ctx: EventContext, name: str, payload: Payload) -> EventReply | None: ...
    async def invoke(self, ctx: EventContext, name: str, payload: Payload | None,
                     invocation_id: str) -> EventReply | None: ...


@dataclass(frozen=True, slots=True)
class HandlerRule:
    """Which events a handler gets: Azure's `userEventPattern` and `systemEvents`."""

    user_event_pattern: str = ""
    system_events: tuple[str, ...] = ()

    def wants_system(self, name: str) -> bool:
        return name in self.system_events

    def wants_user_event(self, name: str) -> bool:
        lowered = name.lower()
        for pattern in self.user_event_pattern.split(","):
            pattern = pattern.strip().lower()
            if pattern and (pattern == "*" or fnmatch.fnmatchcase(lowered, pattern)):
                return True
        return False


Callback = Callable[..., Any]  # any of the four below: sync, or async returning an awaitable
# The in-process handlers' signatures; each may return its answer or an awaitable of it.
ConnectCallback = Callable[[EventContext, ConnectRequest], ConnectResult | Awaitable[ConnectResult | None] | None]
ConnectedCallback = Callable[[EventContext], Awaitable[None] | None]
DisconnectedCallback = Callable[[EventContext, str], Awaitable[None] | None]
# The answer to send back: an EventReply, a Payload, str, bytes, any JSON value, or None for none.
UserEventCallback = Callable[[EventContext, str, Payload], object]
