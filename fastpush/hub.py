"""One hub on one node: its connections, groups and users, and what each operation does to them.

A hub knows nothing of other nodes. The Node hands it operations (`apply`) and questions
(`answer`) that concern its connections, whichever node or caller they came from; the hub tells
the cluster's `Registry` what changed among its own connections (fastpush.broker.base). With the
in-process broker a send is applied here before the caller's call returns: framed once per wire
variant, written to every member.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import assert_never

from . import ops
from .broker.base import Registry
from .conflation import ConflationRules
from .events.dispatcher import HubEvents
from .expiry import local_deadline
from .fanout import Connection, Frames, Tables, fanout
from .lastvalue import Cached, LastValues
from .permissions import grants, with_role, without_role
from .protocol.close_codes import CloseCode
from .protocol.json_protocol import GroupSource, ServerSource
from .protocol.odata_filter import ConnectionFacts, compile_filter
from .protocol.payload import Payload
from .protocol.variants import Variant

__all__ = ["Hub", "Census", "DEFAULT_CLOSE_REASON"]

DEFAULT_CLOSE_REASON = "Closed by the server."
SERVER_SOURCE = ServerSource()

Predicate = Callable[[ConnectionFacts], bool]


class Census:
    """Connections (reliable sessions waiting for their client included) in the hubs sharing it."""

    __slots__ = ("connections",)

    def __init__(self) -> None:
        self.connections = 0


class Seeding:
    """A group's mirror being filled from Redis: who joined meanwhile, what was sent meanwhile."""

    __slots__ = ("joiners", "joiner_ids", "held", "done")

    def __init__(self) -> None:
        self.joiners: list[Connection] = []  # they get the cache first
        self.joiner_ids: frozenset[str] = frozenset()
        self.held: list[ops.SendToGroup] = []  # sends that arrived while the cache was read, for the joiners
        self.done: Awaitable[None] | None = None


class Hub:
    on_empty: Callable[[Hub], None] | None = None  # set by the Node: a hub left with nothing is dropped

    def __init__(self, name: str, registry: Registry, census: Census | None = None) -> None:
        self.name = name
        self.registry = registry
        self.tables = Tables()
        self._user_groups: dict[str, set[str]] = {}  # user -> groups its future connections join
        self.slow_client_closes = 0
        self.events: HubEvents | None = None  # upstream handlers and in-process callbacks, if any
        self.keepalive_seconds: float | None = None  # the hub's webSocketKeepAliveIntervalInSeconds; None: the server's
        self.census = census if census is not None else Census()  # the Node shares one among its hubs
        self.last_values: LastValues | None = None  # the hub's lastValueGroups, if any (fastpush.lastvalue)
        self._seeding: dict[str, Seeding] = {}  # mirrored groups being filled from Redis
        self.conflation: ConflationRules | None = None  # the config file's conflateGroups, if any

    # --- membership --------------------------------------------------------------------------
    def add_connection(self, conn: Connection, groups: Iterable[str] = ()) -> None:
        """Register a connection; it joins the token's groups and the groups its user was added to.
        Their cached last values wait for `serve_last_values`: a client is told it is connected first."""
        self.tables.add(conn)
        self.census.connections += 1
        self.registry.connection_added(self.name, conn)
        for group in groups:
            self._join(conn, group)
        if conn.user_id is not None:
            for group in self._user_groups.get(conn.user_id, ()):
                self._join(conn, group)

    def serve_last_values(self, conn: Connection) -> None:
        """A new connection's groups' cached messages, once its client has been told it is connected."""
        last_values = self.last_values
        if last_values is not None:
            for group in tuple(conn.groups):
                if last_values.policy.wants(group):
                    self._serve_joiner(conn, group, last_values, None)

    def remove_connection(self, conn: Connection) -> bool:
        groups = tuple(conn.groups)
        if not self.tables.remove(conn):
            return False
        self.census.connections -= 1
        for group in groups:
            self.registry.group_left(self.name, conn, group, not self.tables.group_members(group))
            self._presence(conn, group, False)
            self._left(group)
        self.registry.connection_removed(self.name, conn)
        if self.on_empty is not None and self.is_empty:
            self.on_empty(self)
        return True

    def join(self, conn: Connection, group: str) -> Awaitable[object] | None:
        """What to await before sends to the group reach `conn` from every node (None: they do).
        A connection joining a cached group gets its last values now, before any later send."""
        was_member = group in conn.groups
        joined = self._join(conn, group)
        last_values = self.last_values
        if last_values is not None and not was_member and group in conn.groups and last_values.policy.wants(group):
            return self._serve_joiner(conn, group, last_values, joined)
        return joined

    def _serve_joiner(self, conn: Connection, group: str, last_values: LastValues,
                      subscribed: Awaitable[object] | None) -> Awaitable[object] | None:
        """A joiner's cached messages: now when the cache is here, else once the group's mirror is
        filled from Redis (the join's answer waits for it)."""
        seeding = self._seeding.get(group)
        if seeding is None:
            if last_values.holds(group):
                _serve(conn, group, last_values)
                return subscribed
            seeding = self._seeding[group] = Seeding()
            seeding.done = asyncio.get_running_loop().create_task(self._fill(group, last_values, seeding, subscribed))
        seeding.joiners.append(conn)
        seeding.joiner_ids = seeding.joiner_ids | {conn.connection_id}
        return seeding.done

    async def _fill(self, group: str, last_values: LastValues, seeding: Seeding,
                    subscribed: Awaitable[object] | None) -> None:
        """Fill a group's mirror from Redis once this node is subscribed to the group. Sends that
        arrive meanwhile reach the other members at once and wait for the joiners; then the
        joiners get the cache, and the waiting sends it does not hold (docs/architecture.md,
        "The last-value cache")."""
        assert last_values.cluster is not None
        if subscribed is not None:  # if it fails, the join does (its answer says so, logged there)
            await asyncio.wait((asyncio.ensure_future(subscribed),))
        try:
            entries = await last_values.cluster.read(self.name, group)
        finally:
            del self._seeding[group]
        joiners = [conn for conn in seeding.joiners if group in conn.groups]
        newest = 0  # the number of the newest send the joiners get from the cache
        if entries is not None and self.tables.group_members(group):
            last_values.fill(group, entries)
            newest = entries[-1].seq if entries else 0
            for conn in joiners:
                _serve(conn, group, last_values)
        for op in seeding.held:
            if op.last_value_seq and op.last_value_seq <= newest:
                continue  # in the cache they got
            frames = _frames(op.payload, GroupSource(op.group, op.from_user_id), op.expires_at)
            if joiners and frames is not None:
                fanout(joiners, frames, _as_set(op.excluded), _predicate(op.filter))
            self._remember(op, last_values)

    def _join(self, conn: Connection, group: str) -> Awaitable[object] | None:
        if not self.tables.join(conn, group):
            return None
        self._presence(conn, group, True)
        first = len(self.tables.group_members(group)) == 1
        return self.registry.group_joined(self.name, conn, group, first)

    def leave(self, conn: Connection, group: str) -> None:
        if self.tables.leave(conn, group):
            self.registry.group_left(self.name, conn, group, not self.tables.group_members(group))
            self._presence(conn, group, False)
            self._left(group)

    def _presence(self, conn: Connection, group: str, joined: bool) -> None:
        """Tell the handlers that want group presence events. Only client sessions have an event
        context, and none while moving between nodes (their groups move with them)."""
        events = self.events
        if events is not None and events.wants_presence:
            context = getattr(conn, "presence_context", None)
            ctx = context() if context is not None else None
            if ctx is not None:
                events.group_changed(ctx, group, joined)

    @property
    def is_empty(self) -> bool:
        """Nothing a freshly made hub of this name would not have, so dropping it loses nothing:
        no connection on this node (a reliable session waiting for its client counts), no
        user->group record for future connections, no event handlers (configured, or added by
        the embedding program, with their events in flight), no slow-client count and no cached
        last value."""
        return (not self.tables.connections and not self._user_groups and self.events is None
                and not self.slow_client_closes and not self.last_values)

    def connection(self, connection_id: str) -> Connection | None:
        return self.tables.connections.get(connection_id)

    @property
    def connections(self) -> Collection[Connection]:
        return self.tables.connections.values()

    @property
    def connection_ids(self) -> Collection[str]:
        return self.tables.connections.keys()

    @property
    def connection_count(self) -> int:
        return len(self.tables.connections)

    @property
    def user_groups(self) -> Mapping[str, Collection[str]]:
        return self._user_groups

    # --- operations on this node's connections ------------------------------------------------
    def apply(self, op: ops.Op) -> object:
        """Do `op` to this hub's connections here; the result its type names (fastpush.ops)."""
        match op:
            case ops.SendToAll():
                frames = _frames(op.payload, SERVER_SOURCE, op.expires_at)
                if frames is not None:
                    fanout(self.tables.connections.values(), frames, _as_set(op.excluded), _predicate(op.filter))
            case ops.SendToGroup():
                seeding = self._seeding.get(op.group) if self._seeding and op.stream is None else None
                if seeding is not None:
                    seeding.held.append(op)  # its mirror is being filled: the joiners get it then (_fill)
                members = self.tables.group_members(op.group)
                if members and (frames := _frames(op.payload, GroupSource(op.group, op.from_user_id, op.stream),
                                                  op.expires_at)) is not None:
                    excluded = _as_set(op.excluded) if seeding is None else seeding.joiner_ids.union(op.excluded)
                    if self.conflation is not None and op.stream is None:  # a stream's fragments: never
                        frames.conflate = self.conflation.rule(op.group)
                    # A stream's end without data means something only to the JSON family, whose
                    # messages say `endOfStream`: raw and protobuf members get fragments' data only.
                    ends = op.stream is not None and op.stream.end_of_stream and not op.payload.data
                    fanout(members, frames, excluded, _json_only if ends else _predicate(op.filter))
                if self.last_values is not None and op.stream is None:  # a stream's fragments are not cached
                    self._remember(op, self.last_values)
            case ops.SendToUser():
                members = self.tables.user_connections(op.user_id)
                if members and (frames := _frames(op.payload, SERVER_SOURCE, op.expires_at)) is not None:
                    fanout(members, frames, None, _predicate(op.filter))
            case ops.SendToConnection():
                conn = self.connection(op.connection_id)
                if conn is not None and (frames := _frames(op.payload, SERVER_SOURCE, op.expires_at)) is not None:
                    fanout((conn,), frames)
            case ops.AddConnectionToGroup():
                conn = self.connection(op.connection_id)
                if conn is None:
                    return False
                self.join(conn, op.group)
                return True
            case ops.RemoveConnectionFromGroup():
                conn = self.connection(op.connection_id)
                if conn is not None:
                    self.leave(conn, op.group)
            case ops.RemoveConnectionFromAllGroups():
                conn = self.connection(op.connection_id)
                if conn is not None:
                    for group in tuple(conn.groups):
                        self.leave(conn, group)
            case ops.AddUserToGroup():
                self._user_groups.setdefault(op.user_id, set()).add(op.group)
                for conn in tuple(self.tables.user_connections(op.user_id)):
                    self.join(conn, op.group)
            case ops.RemoveUserFromGroup():
                groups = self._user_groups.get(op.user_id)
                if groups is not None:
                    groups.discard(op.group)
                    if not groups:
                        del self._user_groups[op.user_id]
                for conn in tuple(self.tables.user_connections(op.user_id)):
                    self.leave(conn, op.group)
            case ops.RemoveUserFromAllGroups():
                self._user_groups.pop(op.user_id, None)
                for conn in tuple(self.tables.user_connections(op.user_id)):
                    for group in tuple(conn.groups):
                        self.leave(conn, group)
            case ops.AddConnectionsToGroups():
                for conn in self._matching(op.filter):
                    for group in op.groups:
                        self.join(conn, group)
            case ops.RemoveConnectionsFromGroups():
                for conn in self._matching(op.filter):
                    for group in op.groups:
                        self.leave(conn, group)
            case ops.CloseConnection():
                conn = self.connection(op.connection_id)
                if conn is not None:
                    conn.close(CloseCode.NORMAL, op.reason or DEFAULT_CLOSE_REASON, notify=True)
            case ops.CloseAll():
                _close_each(self.tables.connections.values(), op.excluded, op.reason)
            case ops.CloseGroup():
                _close_each(self.tables.group_members(op.group), op.excluded, op.reason)
            case ops.CloseUser():
                _close_each(self.tables.user_connections(op.user_id), op.excluded, op.reason)
            case ops.GrantPermission():
                conn = self.connection(op.connection_id)
                if conn is None:
                    return False
                conn.roles = with_role(conn.roles, op.permission, op.target)
                self.registry.roles_changed(self.name, conn)
                return True
            case ops.RevokePermission():
                conn = self.connection(op.connection_id)
                if conn is not None:
                    conn.roles = without_role(conn.roles, op.permission, op.target)
                    self.registry.roles_changed(self.name, conn)
            case _:
                assert_never(op)
        return None

    def answer(self, question: ops.Query) -> object:
        """A question about this node's connections alone."""
        match question:
            case ops.ConnectionExists():
                return question.connection_id in self.tables.connections
            case ops.GroupExists():
                return bool(self.tables.group_members(question.group))
            case ops.UserExists():
                return bool(self.tables.user_connections(question.user_id))
            case ops.HasPermission():
                conn = self.connection(question.connection_id)
                return conn is not None and grants(conn.roles, question.permission, question.target)
            case ops.GroupMembers():
                return sorted((c.connection_id, c.user_id) for c in self.tables.group_members(question.group))
            case ops.LastValue():
                last_values = self.last_values
                if last_values is None or not last_values.policy.wants(question.group):
                    return None
                return last_values.latest(question.group)
            case _:
                assert_never(question)

    def _remember(self, op: ops.SendToGroup, last_values: LastValues) -> None:
        """A send to a cached group, kept for the group's next joiners (once per send)."""
        if last_values.policy.wants(op.group):
            last_values.record(op.group, Cached.of(op.payload, op.from_user_id, op.expires_at, op.excluded,
                                                   op.filter, op.last_value_seq))

    def _left(self, group: str) -> None:
        """A mirrored group this node no longer has members of is no longer heard: forget it."""
        last_values = self.last_values
        if last_values is not None and last_values.cluster is not None and not self.tables.group_members(group):
            last_values.drop(group)

    def _matching(self, filter: str | None) -> list[Connection]:
        predicate = _predicate(filter)
        return [c for c in self.tables.connections.values() if predicate is None or predicate(c)]


def _frames(payload: Payload, source: ServerSource | GroupSource, expires_at: float) -> Frames | None:
    """One send, framed for its members; None when it expired before it got here (published to
    this node late, say). A message with a TTL carries its deadline on this node's monotonic
    clock, which the queues it may wait in check (fastpush.expiry); one without costs nothing."""
    if not expires_at:
        return Frames(payload, source)
    deadline = local_deadline(expires_at)
    return None if deadline is None else Frames(payload, source, deadline)


def _serve(conn: Connection, group: str, last_values: LastValues) -> None:
    """Write a group's cached messages to a connection that has just joined it, as the group's
    send would have: its excluded connections and filter apply, its TTL's deadline too."""
    for entry in last_values.latest(group):
        frames = Frames(entry.payload, GroupSource(group, entry.from_user_id), entry.deadline)
        fanout((conn,), frames, _as_set(entry.excluded), _predicate(entry.filter))


def _close_each(conns: Iterable[Connection], excluded: tuple[str, ...], reason: str | None) -> None:
    for conn in tuple(conns):
        if conn.connection_id not in excluded:
            conn.close(CloseCode.NORMAL, reason or DEFAULT_CLOSE_REASON, notify=True)


def _predicate(filter: str | None) -> Predicate | None:
    """Filters travel as text (compiled once per node; compile_filter caches)."""
    return compile_filter(filter) if filter else None


def _json_only(conn: Connection) -> bool:
    return conn.variant == Variant.JSON or conn.variant == Variant.JSON_RELIABLE


def _as_set(ids: tuple[str, ...]) -> frozenset[str] | None:
    return frozenset(ids) if ids else None
