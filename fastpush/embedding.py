"""Send and manage groups from Python, without HTTP, with the Python server SDK's method names.

Each method does what the matching REST operation does (same Hub call); call them from the
event loop's thread. With the default in-process broker they act at once and return their
result; with a Redis broker they return an awaitable of it.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable

import msgspec

from .events.callbacks import CallbackHandler
from .events.dispatcher import HubEvents
from .events.model import Callback, HandlerRule
from .hub import Hub
from .permissions import Permission
from .protocol.names import group_error, is_valid_group
from .protocol.payload import DataType, Payload, payload_from_rest

__all__ = ["HubApi", "to_payload"]

_json = msgspec.json.Encoder().encode


def to_payload(message: object, content_type: str | None = None) -> Payload:
    """Like the SDK: bytes are binary, text/plain strings are text, anything else is JSON."""
    if content_type is None:
        if isinstance(message, (bytes, bytearray, memoryview)):
            return Payload(DataType.BINARY, bytes(message))
        return Payload(DataType.JSON, _json(message))
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "text/plain":
        if not isinstance(message, str):
            raise TypeError("a text/plain message must be a str")
        return Payload(DataType.TEXT, message.encode())
    if media == "application/json" and not isinstance(message, (bytes, bytearray, memoryview)):
        return Payload(DataType.JSON, _json(message))
    return payload_from_rest(media, bytes(message) if not isinstance(message, bytes) else message)


def _listing(members: list[tuple[str, str | None]]) -> list[dict]:
    return [{"connectionId": cid, "userId": user} for cid, user in members]


def _check_group(group: str) -> None:
    if not is_valid_group(group):
        raise ValueError(group_error(group))


class HubApi:
    """One hub, seen from the embedding program."""

    def __init__(self, hub: Hub):
        self._hub = hub

    @property
    def name(self) -> str:
        return self._hub.name

    def handle_events(self, *, on_connect: Callback | None = None, on_connected: Callback | None = None,
                      on_disconnected: Callback | None = None, on_event: Callback | None = None,
                      user_events: str = "*") -> None:
        """In-process event handlers, called like an upstream but without HTTP; sync or async.

        on_connect(ctx, request) may raise EventRejected(status) or return a ConnectResult;
        on_event(ctx, name, payload) may return what to send back (str, bytes, JSON value or
        EventReply). They are consulted before any handler from the config file.
        """
        handler = CallbackHandler(on_connect, on_connected, on_disconnected, on_event)
        if self._hub.events is None:
            self._hub.events = HubEvents()
        rule = HandlerRule(user_events if on_event is not None else "", handler.system_events)
        self._hub.events.add(rule, handler, first=True)

    def send_to_all(self, message: object, *, content_type: str | None = None,
                    excluded: Iterable[str] | None = None, filter: str | None = None) -> int:
        """Returns how many connections the message was written to."""
        return self._hub.send_to_all(to_payload(message, content_type), excluded, filter)

    def send_to_group(self, group: str, message: object, *, content_type: str | None = None,
                      excluded: Iterable[str] | None = None, filter: str | None = None) -> int:
        _check_group(group)
        return self._hub.send_to_group(group, to_payload(message, content_type), excluded, filter)

    def send_to_user(self, user_id: str, message: object, *, content_type: str | None = None,
                     filter: str | None = None) -> int:
        return self._hub.send_to_user(user_id, to_payload(message, content_type), filter)

    def send_to_connection(self, connection_id: str, message: object, *, content_type: str | None = None) -> int:
        return self._hub.send_to_connection(connection_id, to_payload(message, content_type))

    def add_connection_to_group(self, group: str, connection_id: str) -> bool:
        _check_group(group)
        return self._hub.add_connection_to_group(group, connection_id)

    def remove_connection_from_group(self, group: str, connection_id: str) -> None:
        return self._hub.remove_connection_from_group(group, connection_id)

    def remove_connection_from_all_groups(self, connection_id: str) -> None:
        return self._hub.remove_connection_from_all_groups(connection_id)

    def add_user_to_group(self, group: str, user_id: str) -> None:
        _check_group(group)
        return self._hub.add_user_to_group(group, user_id)

    def remove_user_from_group(self, group: str, user_id: str) -> None:
        return self._hub.remove_user_from_group(group, user_id)

    def remove_user_from_all_groups(self, user_id: str) -> None:
        return self._hub.remove_user_from_all_groups(user_id)

    def add_connections_to_groups(self, groups: Iterable[str], filter: str | None = None) -> None:
        groups = list(groups)
        for group in groups:
            _check_group(group)
        return self._hub.add_connections_to_groups(groups, filter)

    def remove_connections_from_groups(self, groups: Iterable[str], filter: str | None = None) -> None:
        return self._hub.remove_connections_from_groups(list(groups), filter)

    def connection_exists(self, connection_id: str) -> bool:
        return self._hub.connection_exists(connection_id)

    def group_exists(self, group: str) -> bool:
        return self._hub.group_exists(group)

    def user_exists(self, user_id: str) -> bool:
        return self._hub.user_exists(user_id)

    def list_connections(self, group: str):
        """[{connectionId, userId}] of a group's members (an awaitable of it with a remote broker)."""
        members = self._hub.group_members(group)
        if inspect.isawaitable(members):
            async def later():
                return _listing(await members)
            return later()
        return _listing(members)

    def close_connection(self, connection_id: str, *, reason: str | None = None) -> None:
        return self._hub.close_connection(connection_id, reason)

    def close_all_connections(self, *, excluded: Iterable[str] | None = None, reason: str | None = None) -> None:
        return self._hub.close_all(excluded, reason)

    def close_group_connections(self, group: str, *, excluded: Iterable[str] | None = None,
                                reason: str | None = None) -> None:
        return self._hub.close_group(group, excluded, reason)

    def close_user_connections(self, user_id: str, *, excluded: Iterable[str] | None = None,
                               reason: str | None = None) -> None:
        return self._hub.close_user(user_id, excluded, reason)

    def grant_permission(self, permission: str, connection_id: str, *, target_name: str | None = None) -> bool:
        _check_permission(permission)
        return self._hub.grant_permission(permission, connection_id, target_name)

    def revoke_permission(self, permission: str, connection_id: str, *, target_name: str | None = None) -> None:
        _check_permission(permission)
        return self._hub.revoke_permission(permission, connection_id, target_name)

    def has_permission(self, permission: str, connection_id: str, *, target_name: str | None = None) -> bool:
        _check_permission(permission)
        return self._hub.has_permission(permission, connection_id, target_name)


def _check_permission(permission: str) -> None:
    if permission not in Permission.ALL:
        raise ValueError(f"unknown permission '{permission}': use sendToGroup or joinLeaveGroup")
