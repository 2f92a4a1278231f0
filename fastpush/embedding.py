"""Send and manage groups from Python, without HTTP, with the Python server SDK's method names.

Each method builds the operation the matching REST call builds (fastpush.ops) and hands it to the
node. Every method is a coroutine: with the default in-process broker it completes without
suspending (a burst of sends made without yielding stays in one loop turn and is coalesced);
with a Redis broker it completes once the cluster has the operation. Call them from the event
loop's thread.
"""
from __future__ import annotations

from collections.abc import Iterable

import msgspec

from . import ops
from .events.callbacks import CallbackHandler
from .events.dispatcher import HubEvents
from .events.model import Callback, HandlerRule
from .expiry import expires_at
from .hub import Hub
from .node import Node
from .outcome import resolve
from .permissions import Permission
from .protocol.names import group_error, is_valid_group
from .protocol.odata_filter import compile_filter
from .protocol.payload import DataType, Payload, payload_from_rest
from .protocol.ttl import check_ttl

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
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise TypeError(f"a {media} message must be bytes")
    return payload_from_rest(media, bytes(message))


def _check_group(group: str) -> None:
    if not is_valid_group(group):
        raise ValueError(group_error(group))


def _filter(filter: str | None) -> str | None:
    """A bad filter is refused here (ValueError), not on every node."""
    if filter is None or not filter.strip():
        return None
    compile_filter(filter)
    return filter


def _expires_at(ttl_seconds: int) -> float:
    """As REST's messageTtlSeconds (0 to 300, 0: never); ValueError past it."""
    return expires_at(check_ttl(ttl_seconds, "message_ttl_seconds"))


def _ids(ids: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(ids) if ids else ()


class HubApi:
    """One hub, seen from the embedding program."""

    def __init__(self, node: Node, hub: Hub) -> None:
        self._node = node
        self._hub = hub  # registered, and kept alive by this object: its event handlers live there
        self.name = hub.name

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

    # --- sends: done once the message is framed and written (or, with Redis, published) -----
    # message_ttl_seconds (as the SDK's generated operations take it): never written to a
    # connection after that many seconds; 0, the default, never expires.
    async def send_to_all(self, message: object, *, content_type: str | None = None,
                          excluded: Iterable[str] | None = None, filter: str | None = None,
                          message_ttl_seconds: int = 0) -> None:
        op = ops.SendToAll(self.name, to_payload(message, content_type), _ids(excluded), _filter(filter),
                           _expires_at(message_ttl_seconds))
        await resolve(self._node.submit(op))

    async def send_to_group(self, group: str, message: object, *, content_type: str | None = None,
                            excluded: Iterable[str] | None = None, filter: str | None = None,
                            message_ttl_seconds: int = 0) -> None:
        _check_group(group)
        op = ops.SendToGroup(self.name, group, to_payload(message, content_type), _ids(excluded), _filter(filter),
                             expires_at=_expires_at(message_ttl_seconds))
        await resolve(self._node.submit(op))

    async def send_to_user(self, user_id: str, message: object, *, content_type: str | None = None,
                           filter: str | None = None, message_ttl_seconds: int = 0) -> None:
        op = ops.SendToUser(self.name, user_id, to_payload(message, content_type), _filter(filter),
                            _expires_at(message_ttl_seconds))
        await resolve(self._node.submit(op))

    async def send_to_connection(self, connection_id: str, message: object, *,
                                 content_type: str | None = None, message_ttl_seconds: int = 0) -> None:
        op = ops.SendToConnection(self.name, connection_id, to_payload(message, content_type),
                                  _expires_at(message_ttl_seconds))
        await resolve(self._node.submit(op))

    # --- groups -------------------------------------------------------------------------------
    async def add_connection_to_group(self, group: str, connection_id: str) -> bool:
        """False when the connection does not exist."""
        _check_group(group)
        return await resolve(self._node.submit(ops.AddConnectionToGroup(self.name, connection_id, group)))

    async def remove_connection_from_group(self, group: str, connection_id: str) -> None:
        await resolve(self._node.submit(ops.RemoveConnectionFromGroup(self.name, connection_id, group)))

    async def remove_connection_from_all_groups(self, connection_id: str) -> None:
        await resolve(self._node.submit(ops.RemoveConnectionFromAllGroups(self.name, connection_id)))

    async def add_user_to_group(self, group: str, user_id: str) -> None:
        """The user's connections join now, and its future ones when they connect."""
        _check_group(group)
        await resolve(self._node.submit(ops.AddUserToGroup(self.name, user_id, group)))

    async def remove_user_from_group(self, group: str, user_id: str) -> None:
        await resolve(self._node.submit(ops.RemoveUserFromGroup(self.name, user_id, group)))

    async def remove_user_from_all_groups(self, user_id: str) -> None:
        await resolve(self._node.submit(ops.RemoveUserFromAllGroups(self.name, user_id)))

    async def add_connections_to_groups(self, groups: Iterable[str], filter: str | None = None) -> None:
        names = tuple(groups)
        for group in names:
            _check_group(group)
        await resolve(self._node.submit(ops.AddConnectionsToGroups(self.name, names, _filter(filter))))

    async def remove_connections_from_groups(self, groups: Iterable[str], filter: str | None = None) -> None:
        await resolve(self._node.submit(ops.RemoveConnectionsFromGroups(self.name, tuple(groups), _filter(filter))))

    # --- questions ------------------------------------------------------------------------------
    async def connection_exists(self, connection_id: str) -> bool:
        return await resolve(self._node.ask(ops.ConnectionExists(self.name, connection_id)))

    async def group_exists(self, group: str) -> bool:
        return await resolve(self._node.ask(ops.GroupExists(self.name, group)))

    async def user_exists(self, user_id: str) -> bool:
        return await resolve(self._node.ask(ops.UserExists(self.name, user_id)))

    async def list_connections(self, group: str) -> list[dict[str, str | None]]:
        """[{connectionId, userId}] of a group's members, sorted by connection id."""
        members = await resolve(self._node.ask(ops.GroupMembers(self.name, group)))
        return [{"connectionId": cid, "userId": user} for cid, user in members]

    # --- closing --------------------------------------------------------------------------------
    async def close_connection(self, connection_id: str, *, reason: str | None = None) -> None:
        await resolve(self._node.submit(ops.CloseConnection(self.name, connection_id, reason)))

    async def close_all_connections(self, *, excluded: Iterable[str] | None = None,
                                    reason: str | None = None) -> None:
        await resolve(self._node.submit(ops.CloseAll(self.name, _ids(excluded), reason)))

    async def close_group_connections(self, group: str, *, excluded: Iterable[str] | None = None,
                                      reason: str | None = None) -> None:
        await resolve(self._node.submit(ops.CloseGroup(self.name, group, _ids(excluded), reason)))

    async def close_user_connections(self, user_id: str, *, excluded: Iterable[str] | None = None,
                                     reason: str | None = None) -> None:
        await resolve(self._node.submit(ops.CloseUser(self.name, user_id, _ids(excluded), reason)))

    # --- permissions ----------------------------------------------------------------------------
    async def grant_permission(self, permission: str, connection_id: str, *, target_name: str | None = None) -> bool:
        """False when the connection does not exist."""
        _check_permission(permission)
        return await resolve(self._node.submit(ops.GrantPermission(self.name, connection_id, permission, target_name)))

    async def revoke_permission(self, permission: str, connection_id: str, *, target_name: str | None = None) -> None:
        _check_permission(permission)
        await resolve(self._node.submit(ops.RevokePermission(self.name, connection_id, permission, target_name)))

    async def has_permission(self, permission: str, connection_id: str, *, target_name: str | None = None) -> bool:
        _check_permission(permission)
        return await resolve(self._node.ask(ops.HasPermission(self.name, permission, connection_id, target_name)))


def _check_permission(permission: str) -> None:
    if permission not in Permission.ALL:
        raise ValueError(f"unknown permission '{permission}': use sendToGroup or joinLeaveGroup")
