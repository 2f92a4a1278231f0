"""One hub's behaviour: who is connected, groups, users, permissions, and every way to send.

REST handlers, the JSON subprotocol and the embedding API all call these methods, so there is
one way to send to a group. Sends are synchronous: they frame once and write before returning.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from ._fanout import Connection, Frames, Tables, fanout
from .protocol.close_codes import CloseCode
from .events.dispatcher import HubEvents
from .protocol.codecs import codec_for
from .protocol.json_protocol import GroupSource, ServerSource
from .protocol.payload import Payload

__all__ = ["Hub", "Permission", "DEFAULT_CLOSE_REASON", "allowed", "close", "frames_for"]

DEFAULT_CLOSE_REASON = "Closed by the server."
CLOSE_TIMEOUT_SECONDS = 2.0
_SERVER = ServerSource()

Predicate = Callable[[Connection], bool]


class Permission:
    """The two grantable permissions, by their REST names, and the role strings they stand for."""

    SEND_TO_GROUP = "sendToGroup"
    JOIN_LEAVE_GROUP = "joinLeaveGroup"
    ALL = (SEND_TO_GROUP, JOIN_LEAVE_GROUP)

    @staticmethod
    def role(permission: str, target: str | None = None) -> str:
        return f"webpubsub.{permission}" + (f".{target}" if target else "")


def frames_for(payload: Payload, source: ServerSource | GroupSource) -> Frames:
    """A send, to be framed once per wire variant its targets use."""
    return Frames(payload, source)


class Hub:
    def __init__(self, name: str):
        self.name = name
        self.tables = Tables()
        self._user_groups: dict[str, set[str]] = {}  # user -> groups its future connections join
        self.slow_client_closes = 0
        self.events: HubEvents | None = None  # upstream handlers and in-process callbacks, if any
        self.anonymous_allowed = False

    # --- connections ------------------------------------------------------------------------
    def add_connection(self, conn: Connection, groups: Iterable[str] = ()) -> None:
        """Register a connection; it joins the token's groups and the groups its user was added to."""
        self.tables.add(conn)
        for group in groups:
            self.tables.join(conn, group)
        if conn.user_id is not None:
            for group in self._user_groups.get(conn.user_id, ()):
                self.tables.join(conn, group)

    def remove_connection(self, conn: Connection) -> bool:
        return self.tables.remove(conn)

    def connection(self, connection_id: str) -> Connection | None:
        return self.tables.connections.get(connection_id)

    @property
    def connection_count(self) -> int:
        return len(self.tables.connections)

    def connection_exists(self, connection_id: str) -> bool:
        """A reliable connection that lost its socket still exists while it may recover."""
        return connection_id in self.tables.connections

    def group_exists(self, group: str) -> bool:
        return bool(self.tables.group_members(group))

    def user_exists(self, user_id: str) -> bool:
        return bool(self.tables.user_connections(user_id))

    def group_connections(self, group: str) -> list[Connection]:
        """Members of a group in a stable order (by connection id), for paged listing."""
        return sorted(self.tables.group_members(group), key=lambda c: c.connection_id)

    # --- sends ------------------------------------------------------------------------------
    def send_to_all(self, payload: Payload, excluded: Iterable[str] | None = None,
                    predicate: Predicate | None = None) -> int:
        return fanout(self.tables.connections.values(), frames_for(payload, _SERVER),
                      _as_set(excluded), predicate)

    def send_to_group(self, group: str, payload: Payload, excluded: Iterable[str] | None = None,
                      predicate: Predicate | None = None, from_user_id: str | None = None) -> int:
        members = self.tables.group_members(group)
        if not members:
            return 0
        return fanout(members, frames_for(payload, GroupSource(group, from_user_id)),
                      _as_set(excluded), predicate)

    def send_to_user(self, user_id: str, payload: Payload, predicate: Predicate | None = None) -> int:
        members = self.tables.user_connections(user_id)
        if not members:
            return 0
        return fanout(members, frames_for(payload, _SERVER), None, predicate)

    def send_to_connection(self, connection_id: str, payload: Payload) -> int:
        conn = self.tables.connections.get(connection_id)
        if conn is None:
            return 0
        return fanout((conn,), frames_for(payload, _SERVER))

    # --- groups -----------------------------------------------------------------------------
    def add_connection_to_group(self, group: str, connection_id: str) -> bool:
        """False when the connection does not exist."""
        conn = self.tables.connections.get(connection_id)
        if conn is None:
            return False
        self.tables.join(conn, group)
        return True

    def remove_connection_from_group(self, group: str, connection_id: str) -> None:
        conn = self.tables.connections.get(connection_id)
        if conn is not None:
            self.tables.leave(conn, group)

    def remove_connection_from_all_groups(self, connection_id: str) -> None:
        conn = self.tables.connections.get(connection_id)
        if conn is not None:
            for group in list(conn.groups):
                self.tables.leave(conn, group)

    def add_user_to_group(self, group: str, user_id: str) -> None:
        """Adds the user's current connections, and its future ones, to the group."""
        self._user_groups.setdefault(user_id, set()).add(group)
        for conn in tuple(self.tables.user_connections(user_id)):
            self.tables.join(conn, group)

    def remove_user_from_group(self, group: str, user_id: str) -> None:
        groups = self._user_groups.get(user_id)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._user_groups[user_id]
        for conn in tuple(self.tables.user_connections(user_id)):
            self.tables.leave(conn, group)

    def remove_user_from_all_groups(self, user_id: str) -> None:
        self._user_groups.pop(user_id, None)
        for conn in tuple(self.tables.user_connections(user_id)):
            for group in list(conn.groups):
                self.tables.leave(conn, group)

    def add_connections_to_groups(self, groups: Iterable[str], predicate: Predicate | None) -> None:
        groups = list(groups)
        for conn in self._matching(predicate):
            for group in groups:
                self.tables.join(conn, group)

    def remove_connections_from_groups(self, groups: Iterable[str], predicate: Predicate | None) -> None:
        groups = list(groups)
        for conn in self._matching(predicate):
            for group in groups:
                self.tables.leave(conn, group)

    def _matching(self, predicate: Predicate | None) -> list[Connection]:
        conns = self.tables.connections.values()
        return [c for c in conns if predicate is None or predicate(c)]

    # --- closing ----------------------------------------------------------------------------
    def close_connection(self, connection_id: str, reason: str | None = None) -> None:
        conn = self.tables.connections.get(connection_id)
        if conn is not None:
            close(conn, CloseCode.NORMAL, reason or DEFAULT_CLOSE_REASON, notify=True)

    def close_all(self, excluded: Iterable[str] | None = None, reason: str | None = None) -> None:
        self._close_each(self.tables.connections.values(), excluded, reason)

    def close_group(self, group: str, excluded: Iterable[str] | None = None, reason: str | None = None) -> None:
        self._close_each(self.tables.group_members(group), excluded, reason)

    def close_user(self, user_id: str, excluded: Iterable[str] | None = None, reason: str | None = None) -> None:
        self._close_each(self.tables.user_connections(user_id), excluded, reason)

    def _close_each(self, conns: Iterable[Connection], excluded: Iterable[str] | None,
                    reason: str | None) -> None:
        skip = _as_set(excluded) or ()
        for conn in tuple(conns):
            if conn.connection_id not in skip:
                close(conn, CloseCode.NORMAL, reason or DEFAULT_CLOSE_REASON, notify=True)

    # --- permissions ------------------------------------------------------------------------
    def grant_permission(self, permission: str, connection_id: str, target: str | None = None) -> bool:
        conn = self.tables.connections.get(connection_id)
        if conn is None:
            return False
        conn.roles.add(Permission.role(permission, target))
        return True

    def revoke_permission(self, permission: str, connection_id: str, target: str | None = None) -> None:
        conn = self.tables.connections.get(connection_id)
        if conn is None:
            return
        if target:
            conn.roles.discard(Permission.role(permission, target))
        else:  # revoking for all groups removes the general role and every per-group one
            prefix = Permission.role(permission) + "."
            conn.roles.difference_update([r for r in conn.roles if r.startswith(prefix)])
            conn.roles.discard(Permission.role(permission))

    def has_permission(self, permission: str, connection_id: str, target: str | None = None) -> bool:
        conn = self.tables.connections.get(connection_id)
        if conn is None:
            return False
        return allowed(conn, permission, target)


def allowed(conn: Connection, permission: str, group: str | None) -> bool:
    """A role for all groups, or for this group, grants the permission."""
    roles = conn.roles
    return Permission.role(permission) in roles or (group is not None and Permission.role(permission, group) in roles)


def close(conn: Connection, code: int, reason: str, *, notify: bool = False, keep_session: bool = False) -> None:
    """Close a client: JSON clients first get `system/disconnected` when `notify` (REST closes).

    The session ends with the socket unless `keep_session` (a slow reliable client recovers).
    """
    conn.keep_session = keep_session and conn.keep_session
    if conn.close_reason is None:
        conn.close_reason = reason
    transport = conn.transport
    if transport is None or transport.is_close_frame_sent or transport.is_disconnected:
        if not conn.keep_session and transport is not None and transport.is_disconnected:
            conn.end_session()
        return
    codec = codec_for(conn.variant)
    if notify and codec is not None:
        transport.send(codec.opcode, codec.encode_disconnected(reason))
    transport.send_close(code, _clip_reason(reason))
    # The client answers with its own close frame (handled by the connection); do not wait forever.
    asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_SECONDS, transport.disconnect)


def _clip_reason(reason: str) -> bytes:
    """A close reason must fit a control frame: at most 123 bytes of UTF-8."""
    raw = reason.encode()
    if len(raw) <= 123:
        return raw
    return raw[:123].decode(errors="ignore").encode()


def _as_set(ids: Iterable[str] | None) -> frozenset[str] | None:
    if not ids:
        return None
    return ids if isinstance(ids, (set, frozenset)) else frozenset(ids)
