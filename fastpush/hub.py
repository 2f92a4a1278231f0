"""One hub's behaviour: who is connected, groups, users, permissions, and every way to send.

REST handlers, the JSON subprotocol and the embedding API all call these methods, so there is
one way to send to a group. With the in-process broker, sends are synchronous: they frame once
and write before returning.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .broker import ops
from .broker.base import Broker
from .broker.memory import MemoryBroker
from .events.dispatcher import HubEvents
from .fanout import Connection, Frames, Tables, fanout
from .permissions import Permission, grants
from .protocol.close_codes import CloseCode
from .protocol.codecs import codec_for
from .protocol.json_protocol import GroupSource, ServerSource
from .protocol.odata_filter import compile_filter
from .protocol.payload import Payload

if TYPE_CHECKING:
    from .client_connection import ClientConnection

__all__ = ["Hub", "DEFAULT_CLOSE_REASON", "allowed", "close", "frames_for"]

DEFAULT_CLOSE_REASON = "Closed by the server."
CLOSE_TIMEOUT_SECONDS = 2.0
_SERVER = ServerSource()

Predicate = Callable[[Connection], bool]


def _predicate(filter: str | None) -> Predicate | None:
    """Filters travel as text (compiled once per node; compile_filter caches)."""
    return compile_filter(filter) if filter else None


def _checked(filter: str | None) -> str | None:
    """Reject a bad filter where the call is made (FilterError), not on every node."""
    if filter is None or not filter.strip():
        return None
    compile_filter(filter)
    return filter


def _ids(ids: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(ids) if ids else ()


def frames_for(payload: Payload, source: ServerSource | GroupSource) -> Frames:
    """A send, to be framed once per wire variant its targets use."""
    return Frames(payload, source)


class Census:
    """Connections (reliable sessions waiting for their client included) in the hubs sharing it."""

    __slots__ = ("connections",)

    def __init__(self) -> None:
        self.connections = 0


class Hub:
    """The public methods (send_*, add_*, close_*, *_exists...) act on the whole cluster: they hand
    an operation to the broker, which applies it on every node concerned (here at once, with
    MemoryBroker). `apply` and the local_* methods act on this node's connections only."""

    on_empty: Callable[["Hub"], None] | None = None  # set by the Node: a hub left with nothing is dropped

    def __init__(self, name: str, broker: Broker | None = None):
        self.name = name
        self.broker = broker if broker is not None else MemoryBroker()
        self.tables = Tables()
        self._user_groups: dict[str, set[str]] = {}  # user -> groups its future connections join
        self.slow_client_closes = 0
        self.events: HubEvents | None = None  # upstream handlers and in-process callbacks, if any
        self.anonymous_allowed = False
        self.census = Census()  # the Node gives all its hubs one, so its total costs nothing to read

    # --- cluster-wide operations ------------------------------------------------------------
    def send_to_all(self, payload: Payload, excluded: Iterable[str] | None = None, filter: str | None = None):
        """With MemoryBroker: the number of connections written to. With a remote broker: an
        awaitable that completes when the broker has accepted the send."""
        return self._publish(ops.SendToAll(self.name, payload, _ids(excluded), _checked(filter)))

    def send_to_group(self, group: str, payload: Payload, excluded: Iterable[str] | None = None,
                      filter: str | None = None, from_user_id: str | None = None):
        return self._publish(ops.SendToGroup(self.name, group, payload, _ids(excluded), _checked(filter), from_user_id))

    def send_to_user(self, user_id: str, payload: Payload, filter: str | None = None):
        return self._publish(ops.SendToUser(self.name, user_id, payload, _checked(filter)))

    def send_to_connection(self, connection_id: str, payload: Payload):
        return self._publish(ops.SendToConnection(self.name, connection_id, payload))

    def add_connection_to_group(self, group: str, connection_id: str):
        """False (or an awaitable of False) when the connection does not exist."""
        return self._publish(ops.AddConnectionToGroup(self.name, group, connection_id))

    def remove_connection_from_group(self, group: str, connection_id: str):
        return self._publish(ops.RemoveConnectionFromGroup(self.name, group, connection_id))

    def remove_connection_from_all_groups(self, connection_id: str):
        return self._publish(ops.RemoveConnectionFromAllGroups(self.name, connection_id))

    def add_user_to_group(self, group: str, user_id: str):
        """Adds the user's current connections, and its future ones, to the group."""
        return self._publish(ops.AddUserToGroup(self.name, group, user_id))

    def remove_user_from_group(self, group: str, user_id: str):
        return self._publish(ops.RemoveUserFromGroup(self.name, group, user_id))

    def remove_user_from_all_groups(self, user_id: str):
        return self._publish(ops.RemoveUserFromAllGroups(self.name, user_id))

    def add_connections_to_groups(self, groups: Iterable[str], filter: str | None = None):
        return self._publish(ops.AddConnectionsToGroups(self.name, tuple(groups), _checked(filter)))

    def remove_connections_from_groups(self, groups: Iterable[str], filter: str | None = None):
        return self._publish(ops.RemoveConnectionsFromGroups(self.name, tuple(groups), _checked(filter)))

    def close_connection(self, connection_id: str, reason: str | None = None):
        return self._publish(ops.CloseConnection(self.name, connection_id, reason))

    def close_all(self, excluded: Iterable[str] | None = None, reason: str | None = None):
        return self._publish(ops.CloseAll(self.name, _ids(excluded), reason))

    def close_group(self, group: str, excluded: Iterable[str] | None = None, reason: str | None = None):
        return self._publish(ops.CloseGroup(self.name, group, _ids(excluded), reason))

    def close_user(self, user_id: str, excluded: Iterable[str] | None = None, reason: str | None = None):
        return self._publish(ops.CloseUser(self.name, user_id, _ids(excluded), reason))

    def grant_permission(self, permission: str, connection_id: str, target: str | None = None):
        """False (or an awaitable of False) when the connection does not exist."""
        return self._publish(ops.GrantPermission(self.name, permission, connection_id, target))

    def revoke_permission(self, permission: str, connection_id: str, target: str | None = None):
        return self._publish(ops.RevokePermission(self.name, permission, connection_id, target))

    def connection_exists(self, connection_id: str):
        """A reliable connection that lost its socket still exists while it may recover."""
        return self.broker.connection_exists(self, connection_id)

    def group_exists(self, group: str):
        return self.broker.group_exists(self, group)

    def user_exists(self, user_id: str):
        return self.broker.user_exists(self, user_id)

    def has_permission(self, permission: str, connection_id: str, target: str | None = None):
        return self.broker.has_permission(self, permission, connection_id, target)

    def group_members(self, group: str):
        """(connectionId, userId) pairs of a group, sorted by connection id, for paged listing."""
        return self.broker.group_members(self, group)

    def _publish(self, op: ops.Op):
        return self.broker.publish(self, op)

    # --- this node's connections --------------------------------------------------------------
    def add_connection(self, conn: Connection, groups: Iterable[str] = ()) -> None:
        """Register a connection; it joins the token's groups and the groups its user was added to."""
        self.tables.add(conn)
        self.census.connections += 1
        self.broker.connection_added(self, conn)
        for group in groups:
            self.join(conn, group)
        if conn.user_id is not None:
            for group in self._user_groups.get(conn.user_id, ()):
                self.join(conn, group)

    def remove_connection(self, conn: Connection) -> bool:
        groups = tuple(conn.groups)
        if not self.tables.remove(conn):
            return False
        self.census.connections -= 1
        for group in groups:
            self.broker.group_left(self, conn, group)
        self.broker.connection_removed(self, conn)
        if self.on_empty is not None and self.is_empty:
            self.on_empty(self)
        return True

    def join(self, conn: Connection, group: str):
        """Local membership change; returns what the broker needs awaited (e.g. a subscription)."""
        if self.tables.join(conn, group):
            return self.broker.group_joined(self, conn, group)
        return None

    def leave(self, conn: Connection, group: str):
        if self.tables.leave(conn, group):
            return self.broker.group_left(self, conn, group)
        return None

    @property
    def is_empty(self) -> bool:
        """Nothing a freshly made hub of this name would not have, so dropping it loses nothing:
        no connection on this node (a reliable session waiting for its client counts), no
        user->group record for future connections, no event handlers (configured, or added by
        the embedding program, with their events in flight) and no slow-client count."""
        return (not self.tables.connections and not self._user_groups and self.events is None
                and not self.slow_client_closes)

    def connection(self, connection_id: str) -> Connection | None:
        return self.tables.connections.get(connection_id)

    @property
    def connection_count(self) -> int:
        return len(self.tables.connections)

    def local_connection_exists(self, connection_id: str) -> bool:
        return connection_id in self.tables.connections

    def local_group_exists(self, group: str) -> bool:
        return bool(self.tables.group_members(group))

    def local_user_exists(self, user_id: str) -> bool:
        return bool(self.tables.user_connections(user_id))

    def local_has_permission(self, permission: str, connection_id: str, target: str | None) -> bool:
        conn = self.tables.connections.get(connection_id)
        return conn is not None and allowed(conn, permission, target)

    def local_group_members(self, group: str) -> list[tuple[str, str | None]]:
        return sorted((c.connection_id, c.user_id) for c in self.tables.group_members(group))

    # --- applying an operation to this node's connections -----------------------------------
    def apply(self, op: ops.Op):
        return _APPLY[type(op)](self, op)

    def _send_to_all(self, op: ops.SendToAll) -> int:
        return fanout(self.tables.connections.values(), frames_for(op.payload, _SERVER),
                      _as_set(op.excluded), _predicate(op.filter))

    def _send_to_group(self, op: ops.SendToGroup) -> int:
        members = self.tables.group_members(op.group)
        if not members:
            return 0
        return fanout(members, frames_for(op.payload, GroupSource(op.group, op.from_user_id)),
                      _as_set(op.excluded), _predicate(op.filter))

    def _send_to_user(self, op: ops.SendToUser) -> int:
        members = self.tables.user_connections(op.user_id)
        if not members:
            return 0
        return fanout(members, frames_for(op.payload, _SERVER), None, _predicate(op.filter))

    def _send_to_connection(self, op: ops.SendToConnection) -> int:
        conn = self.tables.connections.get(op.connection_id)
        if conn is None:
            return 0
        return fanout((conn,), frames_for(op.payload, _SERVER))

    def _add_connection_to_group(self, op: ops.AddConnectionToGroup) -> bool:
        conn = self.tables.connections.get(op.connection_id)
        if conn is None:
            return False
        self.join(conn, op.group)
        return True

    def _remove_connection_from_group(self, op: ops.RemoveConnectionFromGroup) -> None:
        conn = self.tables.connections.get(op.connection_id)
        if conn is not None:
            self.leave(conn, op.group)

    def _remove_connection_from_all_groups(self, op: ops.RemoveConnectionFromAllGroups) -> None:
        conn = self.tables.connections.get(op.connection_id)
        if conn is not None:
            for group in tuple(conn.groups):
                self.leave(conn, group)

    def _add_user_to_group(self, op: ops.AddUserToGroup) -> None:
        self._user_groups.setdefault(op.user_id, set()).add(op.group)
        for conn in tuple(self.tables.user_connections(op.user_id)):
            self.join(conn, op.group)

    def _remove_user_from_group(self, op: ops.RemoveUserFromGroup) -> None:
        groups = self._user_groups.get(op.user_id)
        if groups is not None:
            groups.discard(op.group)
            if not groups:
                del self._user_groups[op.user_id]
        for conn in tuple(self.tables.user_connections(op.user_id)):
            self.leave(conn, op.group)

    def _remove_user_from_all_groups(self, op: ops.RemoveUserFromAllGroups) -> None:
        self._user_groups.pop(op.user_id, None)
        for conn in tuple(self.tables.user_connections(op.user_id)):
            for group in tuple(conn.groups):
                self.leave(conn, group)

    def _add_connections_to_groups(self, op: ops.AddConnectionsToGroups) -> None:
        for conn in self._matching(op.filter):
            for group in op.groups:
                self.join(conn, group)

    def _remove_connections_from_groups(self, op: ops.RemoveConnectionsFromGroups) -> None:
        for conn in self._matching(op.filter):
            for group in op.groups:
                self.leave(conn, group)

    def _matching(self, filter: str | None) -> list[Connection]:
        predicate = _predicate(filter)
        return [c for c in self.tables.connections.values() if predicate is None or predicate(c)]

    def _close_connection(self, op: ops.CloseConnection) -> None:
        conn = self.tables.connections.get(op.connection_id)
        if conn is not None:
            close(conn, CloseCode.NORMAL, op.reason or DEFAULT_CLOSE_REASON, notify=True)

    def _close_all(self, op: ops.CloseAll) -> None:
        self._close_each(self.tables.connections.values(), op.excluded, op.reason)

    def _close_group(self, op: ops.CloseGroup) -> None:
        self._close_each(self.tables.group_members(op.group), op.excluded, op.reason)

    def _close_user(self, op: ops.CloseUser) -> None:
        self._close_each(self.tables.user_connections(op.user_id), op.excluded, op.reason)

    def _close_each(self, conns: Iterable[Connection], excluded: tuple[str, ...], reason: str | None) -> None:
        for conn in tuple(conns):
            if conn.connection_id not in excluded:
                close(conn, CloseCode.NORMAL, reason or DEFAULT_CLOSE_REASON, notify=True)

    def _grant_permission(self, op: ops.GrantPermission) -> bool:
        conn = self.tables.connections.get(op.connection_id)
        if conn is None:
            return False
        _own_roles(conn).add(Permission.role(op.permission, op.target))
        self.broker.roles_changed(self, conn)
        return True

    def _revoke_permission(self, op: ops.RevokePermission) -> None:
        conn = self.tables.connections.get(op.connection_id)
        if conn is None:
            return
        roles = _own_roles(conn)
        if op.target:
            roles.discard(Permission.role(op.permission, op.target))
        else:  # revoking for all groups removes the general role and every per-group one
            prefix = Permission.role(op.permission) + "."
            roles.difference_update([r for r in roles if r.startswith(prefix)])
            roles.discard(Permission.role(op.permission))
        self.broker.roles_changed(self, conn)


_APPLY = {
    ops.SendToAll: Hub._send_to_all,
    ops.SendToGroup: Hub._send_to_group,
    ops.SendToUser: Hub._send_to_user,
    ops.SendToConnection: Hub._send_to_connection,
    ops.AddConnectionToGroup: Hub._add_connection_to_group,
    ops.RemoveConnectionFromGroup: Hub._remove_connection_from_group,
    ops.RemoveConnectionFromAllGroups: Hub._remove_connection_from_all_groups,
    ops.AddUserToGroup: Hub._add_user_to_group,
    ops.RemoveUserFromGroup: Hub._remove_user_from_group,
    ops.RemoveUserFromAllGroups: Hub._remove_user_from_all_groups,
    ops.AddConnectionsToGroups: Hub._add_connections_to_groups,
    ops.RemoveConnectionsFromGroups: Hub._remove_connections_from_groups,
    ops.CloseConnection: Hub._close_connection,
    ops.CloseAll: Hub._close_all,
    ops.CloseGroup: Hub._close_group,
    ops.CloseUser: Hub._close_user,
    ops.GrantPermission: Hub._grant_permission,
    ops.RevokePermission: Hub._revoke_permission,
}


def _own_roles(conn: Connection) -> set[str]:
    """Connections share one empty frozenset until they get roles of their own."""
    if type(conn.roles) is not set:
        conn.roles = set(conn.roles)
    return conn.roles


def allowed(conn: Connection, permission: str, group: str | None) -> bool:
    """A role for all groups, for this group, or a wildcard group role matching it (see permissions)."""
    return grants(conn.roles, permission, group)


def close(conn: ClientConnection, code: int, reason: str, *, notify: bool = False, keep_session: bool = False) -> None:
    """Close a client: JSON clients first get `system/disconnected` when `notify` (REST closes).

    The session ends with the socket unless `keep_session` (a slow reliable client recovers).
    """
    conn.keep_session = keep_session and conn.keep_session
    if conn.close_reason is None:
        conn.close_reason = reason
        conn.close_code = int(code)
    transport = conn.transport
    if transport is None or transport.is_close_frame_sent or transport.is_disconnected:
        if not conn.keep_session and transport is not None and transport.is_disconnected:
            conn.end_session()
        return
    codec = codec_for(conn.variant)
    if notify and codec is not None:
        conn.send_frame(codec.opcode, codec.encode_disconnected(reason))
    conn.flush()  # what is queued for this turn goes before the close frame
    transport.send_close(code, _clip_reason(reason))
    # The client answers with its own close frame (handled by the connection); do not wait forever.
    asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_SECONDS, transport.disconnect)


def _clip_reason(reason: str) -> bytes:
    """A close reason must fit a control frame: at most 123 bytes of UTF-8."""
    raw = reason.encode()
    if len(raw) <= 123:
        return raw
    return raw[:123].decode(errors="ignore").encode()


def _as_set(ids: tuple[str, ...]) -> frozenset[str] | None:
    return frozenset(ids) if ids else None
