"""Many nodes serving one set of hubs through a real Redis server.

A node publishes each operation once; every node fans it out to its own connections. Channels:
`{p}:h:{hub}` (hub-wide operations; nodes with connections in the hub subscribe), `{p}:g:{hub}:{group}`
(nodes with local members subscribe), `{p}:n:{node}` (this node's connection- and user-targeted
operations, and replies). What the REST API asks about (does a connection, user or group exist,
who is in a group, which roles a connection has, which groups a user's future connections join)
lives in Redis; an entry counts only while the node that wrote it is alive (`{p}:alive:{node}`,
refreshed every few seconds), and a janitor removes a dead node's entries.

Operations that change membership, permissions or connections are confirmed: the publisher waits
until every node that received the operation has applied it (and, for joins, subscribed), so a
send made right after a REST add reaches the new member. One publishing socket per node keeps one
publisher's operations in order. While Redis is unreachable, local traffic goes on, operations
are refused with BrokerUnavailable (REST: 503), and the node reconnects with backoff, then
subscribes and registers its connections again.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import TYPE_CHECKING

import msgspec

from ..permissions import grants
from . import ops
from .errors import BrokerUnavailable
from .resp import RedisAddress, RedisGone, RespConnection, SubscriberConnection

if TYPE_CHECKING:
    from ..fanout import Connection
    from ..hub import Hub

__all__ = ["RedisBroker"]

log = logging.getLogger("fastpush.broker")

# Lua: each script runs atomically, so a lookup and the publish it decides are one step.
_ROUTE_TO_CONNECTION = """
local node = redis.call('HGET', KEYS[1], 'node')
if not node or redis.call('EXISTS', ARGV[1] .. ':alive:' .. node) == 0 then return -1 end
return redis.call('PUBLISH', ARGV[1] .. ':n:' .. node, ARGV[2])
"""
_ROUTE_TO_USER = """
local seen, receivers = {}, 0
for _, node in ipairs(redis.call('HVALS', KEYS[1])) do
  if not seen[node] and redis.call('EXISTS', ARGV[1] .. ':alive:' .. node) == 1 then
    seen[node] = true
    receivers = receivers + redis.call('PUBLISH', ARGV[1] .. ':n:' .. node, ARGV[2])
  end
end
return receivers
"""
_LIVE_FIELDS = """
local out = {}
local values = redis.call('HGETALL', KEYS[1])
for i = 1, #values, 2 do
  local node = string.match(values[i + 1], '^[^|]*')
  if redis.call('EXISTS', ARGV[1] .. ':alive:' .. node) == 1 then
    table.insert(out, values[i]); table.insert(out, values[i + 1])
  end
end
return out
"""
_CONNECTION = """
local fields = redis.call('HMGET', KEYS[1], 'node', 'roles')
if not fields[1] or redis.call('EXISTS', ARGV[1] .. ':alive:' .. fields[1]) == 0 then return false end
return fields[2] or '[]'
"""
_FORGET_NODE = """
local prefix, node = ARGV[1], ARGV[2]
local index = prefix .. ':conns:' .. node
for _, entry in ipairs(redis.call('SMEMBERS', index)) do
  local hub, cid = string.match(entry, '^(.-)%z(.*)$')
  local conn = prefix .. ':c:' .. hub .. ':' .. cid
  local user = redis.call('HGET', conn, 'user')
  if user and user ~= '' then redis.call('HDEL', prefix .. ':u:' .. hub .. ':' .. user, cid) end
  for _, group in ipairs(redis.call('SMEMBERS', prefix .. ':cg:' .. hub .. ':' .. cid)) do
    redis.call('HDEL', prefix .. ':g:' .. hub .. ':' .. group, cid)
  end
  redis.call('DEL', conn, prefix .. ':cg:' .. hub .. ':' .. cid)
end
redis.call('DEL', index)
redis.call('SREM', prefix .. ':nodes', node)
return 1
"""

# Operations the publisher waits for (every receiving node applied them), and where each goes.
_CONFIRMED = (ops.AddConnectionToGroup, ops.RemoveConnectionFromGroup, ops.RemoveConnectionFromAllGroups,
              ops.AddUserToGroup, ops.RemoveUserFromGroup, ops.RemoveUserFromAllGroups,
              ops.AddConnectionsToGroups, ops.RemoveConnectionsFromGroups, ops.CloseConnection, ops.CloseAll,
              ops.CloseGroup, ops.CloseUser, ops.GrantPermission, ops.RevokePermission)
_BY_CONNECTION = (ops.SendToConnection, ops.AddConnectionToGroup, ops.RemoveConnectionFromGroup,
                  ops.RemoveConnectionFromAllGroups, ops.CloseConnection, ops.GrantPermission, ops.RevokePermission)
_BY_USER = (ops.SendToUser, ops.CloseUser)
_BY_GROUP = (ops.SendToGroup, ops.CloseGroup)
_FOUND_OR_NOT = (ops.AddConnectionToGroup, ops.GrantPermission)  # REST answers 404 when missing


class _Confirmation:
    """Replies to one confirmed operation; complete once as many arrived as nodes received it."""

    __slots__ = ("future", "results", "expected")

    def __init__(self, future: asyncio.Future):
        self.future = future
        self.results: list[tuple[bool, bytes | None]] = []
        self.expected: int | None = None  # known once PUBLISH has said how many nodes got it

    def add(self, ok: bool, data: bytes | None = None) -> None:
        self.results.append((ok, data))
        self._check()

    def expect(self, count: int) -> None:
        self.expected = count
        self._check()

    def _check(self) -> None:
        if self.expected is not None and len(self.results) >= self.expected and not self.future.done():
            self.future.set_result(None)


_OP, _REPLY, _TAKE_SESSION = 0, 1, 2


class _Envelope(msgspec.Struct, array_like=True, omit_defaults=True):
    """On the wire: an operation (with where to confirm it), a reply, or a request for a
    reliable session (a client recovering onto another node)."""

    kind: int
    request_id: int = 0
    reply_to: str | None = None  # the node waiting for the reply
    data: bytes | None = None  # _OP: the operation; _REPLY: a result (a session's state); _TAKE_SESSION: its id
    ok: bool = True
    hub: str = ""
    token: str = ""
    subprotocol: str | None = None


_envelope_encode = msgspec.msgpack.Encoder().encode
_envelope_decode = msgspec.msgpack.Decoder(_Envelope).decode


class RedisBroker:
    name = "redis"

    def __init__(self, url: str, *, prefix: str = "fastpush", node_ttl: float = 10.0, confirm_timeout: float = 5.0):
        self._address = RedisAddress(url)
        self.url = url
        self.prefix = prefix
        self.node_id = secrets.token_hex(6)
        self._ttl = node_ttl
        self._confirm_timeout = confirm_timeout
        self._node = None
        self._commands: RespConnection | None = None
        self._subscriber: SubscriberConnection | None = None
        self._channels: set[bytes] = set()
        self._scripts: dict[str, bytes] = {}
        self._pending: dict[int, tuple[asyncio.Future, list]] = {}
        self._next_request = 0
        self._applying: list[asyncio.Future] | None = None  # hook writes of the op being applied
        self._tasks: list[asyncio.Task] = []
        self.healthy = False
        self.last_error: str | None = None

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self, node) -> None:
        self._node = node
        await self._connect()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep_alive()), loop.create_task(self._watch())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.healthy:
            try:
                await self._run("DEL", self._key("alive", self.node_id))
                await self._script("forget", 0, self.prefix, self.node_id)
            except (RedisGone, OSError):
                pass
        for conn in (self._commands, self._subscriber):
            if conn is not None:
                await conn.close()
        self.healthy = False

    def health(self) -> dict:
        return {"broker": self.name, "node": self.node_id, "healthy": self.healthy, "error": self.last_error}

    async def _connect(self) -> None:
        commands = RespConnection(self._address)
        subscriber = SubscriberConnection(self._address, self._on_message)
        try:
            await commands.connect()
            await subscriber.connect()
        except BaseException:
            await commands.close()
            await subscriber.close()
            raise
        self._commands, self._subscriber = commands, subscriber
        for name, source in (("connection", _ROUTE_TO_CONNECTION), ("user", _ROUTE_TO_USER),
                             ("live", _LIVE_FIELDS), ("conn", _CONNECTION), ("forget", _FORGET_NODE)):
            self._scripts[name] = await commands.execute("SCRIPT", "LOAD", source)
        self._channels.add(self._channel("n", self.node_id))
        subscriber.subscribe(*self._channels)  # after a reconnect: everything this node had
        await subscriber.barrier()
        await self._announce()
        await self._register_everything()
        self.healthy, self.last_error = True, None
        log.info("node %s connected to Redis at %s:%d", self.node_id, self._address.host, self._address.port)

    async def _watch(self) -> None:
        """When Redis goes away: mark unhealthy, reconnect with backoff, resubscribe, re-register."""
        while True:
            await asyncio.wait((self._subscriber.closed, self._commands.closed), return_when=asyncio.FIRST_COMPLETED)
            self.healthy, self.last_error = False, "lost the connection to Redis"
            log.error("node %s lost Redis; refusing cluster operations until it is back", self.node_id)
            self._fail_pending()
            await self._commands.close()
            await self._subscriber.close()
            delay = 0.1
            while not self.healthy:
                try:
                    await self._connect()
                except (OSError, RedisGone) as exc:
                    self.last_error = f"reconnecting to Redis failed: {exc}"
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            if not self.healthy:
                continue
            try:
                await self._announce()
                await self._forget_dead_nodes()
            except (RedisGone, OSError) as exc:
                log.warning("node %s: keep-alive failed: %s", self.node_id, exc)

    async def _announce(self) -> None:
        self._commands.execute("SADD", self._key("nodes"), self.node_id)
        await self._commands.execute("SET", self._key("alive", self.node_id), b"1", "PX", int(self._ttl * 1000))

    async def _forget_dead_nodes(self) -> None:
        for node in await self._run("SMEMBERS", self._key("nodes")):
            node = node.decode()
            if node != self.node_id and not await self._run("EXISTS", self._key("alive", node)):
                await self._script("forget", 0, self.prefix, node)
                log.info("node %s: forgot dead node %s", self.node_id, node)

    async def _register_everything(self) -> None:
        """After (re)connecting: Redis may have restarted empty; write this node's state again."""
        for hub in self._node.hubs():
            if hub.tables.connections:
                self._subscribe(self._channel("h", hub.name.lower()))
            for conn in hub.tables.connections.values():
                self._write_connection(hub, conn)
                for group in conn.groups:
                    self._write_membership(hub, conn, group)
                    self._subscribe(self._group_channel(hub, group))
            for user, groups in hub._user_groups.items():
                if groups:
                    self._commands.execute("SADD", self._key("ug", hub.name.lower(), user), *groups)
        await self._subscriber.barrier()

    # --- keys and channels ------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _channel(self, kind: str, *parts: str) -> bytes:
        return self._key(kind, *parts).encode()

    def _group_channel(self, hub: Hub, group: str) -> bytes:
        return self._channel("g", hub.name.lower(), group)

    def _subscribe(self, channel: bytes) -> None:
        if channel not in self._channels:
            self._channels.add(channel)
            self._subscriber.subscribe(channel)

    def _unsubscribe(self, channel: bytes) -> None:
        if channel in self._channels:
            self._channels.discard(channel)
            self._subscriber.unsubscribe(channel)

    def _check(self) -> None:
        if not self.healthy:
            raise BrokerUnavailable(f"The cluster broker (Redis) is unavailable: {self.last_error}")

    async def _run(self, *args):
        return await self._commands.execute(*args)

    async def _script(self, name: str, numkeys: int, *args):
        return await self._commands.execute("EVALSHA", self._scripts[name], numkeys, *args)

    # --- publishing -------------------------------------------------------------------------
    def publish(self, hub: Hub, op: ops.Op):
        return self._publish(hub, op)

    async def _publish(self, hub: Hub, op: ops.Op):
        self._check()
        confirmed = isinstance(op, _CONFIRMED)
        request_id, confirmation = self._expect_replies() if confirmed else (0, None)
        message = _envelope_encode(_Envelope(_OP, request_id, self.node_id if confirmed else None, ops.encode(op)))
        name = hub.name.lower()
        try:
            self._record_user_groups(name, op)
            if isinstance(op, _BY_CONNECTION):
                receivers = await self._script("connection", 1, self._key("c", name, op.connection_id),
                                               self.prefix, message)
            elif isinstance(op, _BY_USER):
                receivers = await self._script("user", 1, self._key("u", name, op.user_id), self.prefix, message)
            elif isinstance(op, _BY_GROUP):
                receivers = await self._run("PUBLISH", self._channel("g", name, op.group), message)
            else:
                receivers = await self._run("PUBLISH", self._channel("h", name), message)
        except (RedisGone, OSError) as exc:
            self._pending.pop(request_id, None)
            raise BrokerUnavailable(f"The cluster broker (Redis) is unavailable: {exc}") from None
        if not confirmed:
            return None
        if receivers < 0:  # no live node holds that connection
            self._pending.pop(request_id, None)
            return False if isinstance(op, _FOUND_OR_NOT) else None
        results = await self._await_replies(request_id, confirmation, receivers)
        return any(ok for ok, _ in results) if isinstance(op, _FOUND_OR_NOT) else None

    def _record_user_groups(self, hub: str, op: ops.Op) -> None:
        """Which groups a user's future connections join is cluster state: written by the node
        that takes the call, on the same socket just before the operation is published."""
        if isinstance(op, ops.AddUserToGroup):
            self._commands.execute("SADD", self._key("ug", hub, op.user_id), op.group)
        elif isinstance(op, ops.RemoveUserFromGroup):
            self._commands.execute("SREM", self._key("ug", hub, op.user_id), op.group)
        elif isinstance(op, ops.RemoveUserFromAllGroups):
            self._commands.execute("DEL", self._key("ug", hub, op.user_id))

    def _expect_replies(self) -> tuple[int, "_Confirmation"]:
        self._next_request += 1
        confirmation = _Confirmation(asyncio.get_running_loop().create_future())
        self._pending[self._next_request] = confirmation
        return self._next_request, confirmation

    async def _await_replies(self, request_id: int, confirmation: "_Confirmation", count: int) -> list:
        confirmation.expect(count)
        try:
            await asyncio.wait_for(asyncio.shield(confirmation.future), self._confirm_timeout)
        except asyncio.TimeoutError:
            raise BrokerUnavailable("A node did not confirm the operation in time.") from None
        finally:
            self._pending.pop(request_id, None)
        return confirmation.results

    def _fail_pending(self) -> None:
        for confirmation in self._pending.values():
            if not confirmation.future.done():
                confirmation.future.set_exception(BrokerUnavailable("The connection to Redis was lost."))

    # --- receiving --------------------------------------------------------------------------
    def _on_message(self, channel: bytes, data: bytes) -> None:
        envelope = _envelope_decode(data)
        if envelope.kind == _REPLY:
            confirmation = self._pending.get(envelope.request_id)
            if confirmation is not None:
                confirmation.add(envelope.ok, envelope.data)
            return
        if envelope.kind == _TAKE_SESSION:
            self._hand_over(envelope)
            return
        op = ops.decode(envelope.data)
        self._applying = []
        try:  # registers no hub unless the operation leaves something in it (see Node.call)
            result = self._node.call(op.hub, lambda hub: hub.apply(op))
        finally:
            writes, self._applying = self._applying, None
        if envelope.reply_to is not None:
            asyncio.get_running_loop().create_task(
                self._confirm(envelope.reply_to, envelope.request_id, result, writes))

    async def _confirm(self, reply_to: str, request_id: int, result, writes: list) -> None:
        """Confirm once this node's part is in force: its Redis writes done, its subscriptions active."""
        try:
            await asyncio.gather(*writes)
            await self._subscriber.barrier()
            await self._reply(reply_to, request_id, result is not False)
        except (RedisGone, OSError) as exc:
            log.warning("node %s: could not confirm an operation: %s", self.node_id, exc)

    async def _reply(self, reply_to: str, request_id: int, ok: bool, data: bytes | None = None) -> None:
        await self._run("PUBLISH", self._channel("n", reply_to), _envelope_encode(_Envelope(_REPLY, request_id, ok=ok, data=data)))

    # --- reliable sessions moving between nodes ---------------------------------------------
    def take_session(self, hub: Hub, connection_id: str, token: str | None, subprotocol: str | None):
        """Ask the node holding a reliable session to hand it over (its state, or None)."""
        async def take() -> bytes | None:
            self._check()
            request_id, confirmation = self._expect_replies()
            message = _envelope_encode(_Envelope(_TAKE_SESSION, request_id, self.node_id, connection_id.encode(),
                                                 hub=hub.name, token=token or "", subprotocol=subprotocol))
            try:
                receivers = await self._script("connection", 1, self._key("c", hub.name.lower(), connection_id),
                                               self.prefix, message)
            except (RedisGone, OSError) as exc:
                self._pending.pop(request_id, None)
                raise BrokerUnavailable(f"The cluster broker (Redis) is unavailable: {exc}") from None
            if receivers <= 0:
                self._pending.pop(request_id, None)
                return None
            await self._await_replies(request_id, confirmation, receivers)
            return next((data for ok, data in confirmation.results if ok), None)
        return take()

    def _hand_over(self, envelope: _Envelope) -> None:
        hub = self._node.find(envelope.hub)
        conn = hub.connection(envelope.data.decode()) if hub is not None else None
        self._applying = []
        try:
            state = conn.hand_over(envelope.token, envelope.subprotocol) if conn is not None else None
        finally:
            writes, self._applying = self._applying, None

        async def reply() -> None:
            try:
                await asyncio.gather(*writes)
                await self._reply(envelope.reply_to, envelope.request_id, state is not None, state)
            except (RedisGone, OSError) as exc:
                log.warning("node %s: could not hand a session over: %s", self.node_id, exc)
        asyncio.get_running_loop().create_task(reply())

    # --- queries ----------------------------------------------------------------------------
    async def _connection_roles(self, hub: Hub, connection_id: str) -> list[str] | None:
        self._check()
        roles = await self._script("conn", 1, self._key("c", hub.name.lower(), connection_id), self.prefix)
        return None if roles is None else json.loads(roles)

    def connection_exists(self, hub: Hub, connection_id: str):
        async def query() -> bool:
            return await self._connection_roles(hub, connection_id) is not None
        return query()

    def has_permission(self, hub: Hub, permission: str, connection_id: str, target: str | None):
        async def query() -> bool:
            roles = await self._connection_roles(hub, connection_id)
            return roles is not None and grants(roles, permission, target)
        return query()

    async def _live(self, key: str) -> list[bytes]:
        self._check()
        return await self._script("live", 1, key, self.prefix)

    def user_exists(self, hub: Hub, user_id: str):
        async def query() -> bool:
            return bool(await self._live(self._key("u", hub.name.lower(), user_id)))
        return query()

    def group_exists(self, hub: Hub, group: str):
        async def query() -> bool:
            return bool(await self._live(self._key("g", hub.name.lower(), group)))
        return query()

    def group_members(self, hub: Hub, group: str):
        async def query() -> list[tuple[str, str | None]]:
            flat = await self._live(self._key("g", hub.name.lower(), group))
            pairs = []
            for i in range(0, len(flat), 2):
                user = flat[i + 1].split(b"|", 1)[1].decode()
                pairs.append((flat[i].decode(), user or None))
            return sorted(pairs)
        return query()

    def prepare_connection(self, hub: Hub, user_id: str | None, groups: tuple[str, ...]):
        """Before a new connection is handed to picows: the groups its user was added to (cluster
        wide), and subscriptions to its hub and groups already in force, so nothing sent to it
        from the moment it is connected can miss it."""
        async def prepare() -> tuple[str, ...]:
            self._check()
            name = hub.name.lower()
            user_groups = ()
            if user_id is not None:
                user_groups = tuple(g.decode() for g in await self._run("SMEMBERS", self._key("ug", name, user_id)))
            self._subscribe(self._channel("h", name))
            for group in (*groups, *user_groups):
                self._subscribe(self._group_channel(hub, group))
            await self._subscriber.barrier()
            return user_groups
        return prepare()

    # --- this node's changes, written to Redis ----------------------------------------------
    def _write(self, *args) -> asyncio.Future | None:
        if self._commands is None or not self._commands.connected:
            return None  # rewritten by _register_everything after reconnecting
        future = self._commands.execute(*args)
        future.add_done_callback(_log_failure)
        if self._applying is not None:
            self._applying.append(future)
        return future

    def _write_connection(self, hub: Hub, conn: Connection) -> None:
        name = hub.name.lower()
        self._write("HSET", self._key("c", name, conn.connection_id), "node", self.node_id,
                    "user", conn.user_id or "", "roles", json.dumps(sorted(conn.roles)))
        self._write("SADD", self._key("conns", self.node_id), f"{name}\0{conn.connection_id}")
        if conn.user_id is not None:
            self._write("HSET", self._key("u", name, conn.user_id), conn.connection_id, self.node_id)

    def _write_membership(self, hub: Hub, conn: Connection, group: str):
        name = hub.name.lower()
        self._write("SADD", self._key("cg", name, conn.connection_id), group)
        return self._write("HSET", self._key("g", name, group), conn.connection_id,
                           f"{self.node_id}|{conn.user_id or ''}")

    def connection_added(self, hub: Hub, conn: Connection) -> None:
        self._write_connection(hub, conn)

    def connection_removed(self, hub: Hub, conn: Connection) -> None:
        name = hub.name.lower()
        self._write("DEL", self._key("c", name, conn.connection_id), self._key("cg", name, conn.connection_id))
        self._write("SREM", self._key("conns", self.node_id), f"{name}\0{conn.connection_id}")
        if conn.user_id is not None:
            self._write("HDEL", self._key("u", name, conn.user_id), conn.connection_id)

    def group_joined(self, hub: Hub, conn: Connection, group: str) -> asyncio.Future | None:
        """Returns what to await before the join is in force everywhere (written, subscribed)."""
        first = len(hub.tables.group_members(group)) == 1
        if first:
            self._subscribe(self._group_channel(hub, group))
        written = self._write_membership(hub, conn, group)
        if written is None:
            return None
        if not first:
            return written
        done = asyncio.gather(written, self._subscriber.barrier())
        done.add_done_callback(_log_failure)
        return done

    def group_left(self, hub: Hub, conn: Connection, group: str) -> None:
        if not hub.tables.group_members(group):
            self._unsubscribe(self._group_channel(hub, group))
        name = hub.name.lower()
        self._write("SREM", self._key("cg", name, conn.connection_id), group)
        self._write("HDEL", self._key("g", name, group), conn.connection_id)

    def roles_changed(self, hub: Hub, conn: Connection) -> None:
        self._write("HSET", self._key("c", hub.name.lower(), conn.connection_id), "roles", json.dumps(sorted(conn.roles)))



def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("a Redis write failed: %s", future.exception())
