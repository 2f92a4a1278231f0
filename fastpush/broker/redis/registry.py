"""What the cluster knows, kept in Redis: which node holds each connection, its user and roles,
each group's members, the groups a user's future connections join, and which nodes are alive.

Keys (hub names lowercased): `c:{hub}:{cid}` (node, user, roles; `moving` while a reliable
session is reserved for another node), `cg:{hub}:{cid}` (its groups), `g:{hub}:{group}`
(cid -> node|user), `u:{hub}:{user}` (cid -> node), `ug:{hub}:{user}` (groups for future
connections), `conns:{node}` (what to forget when it dies), `nodes`, `alive:{node}` (expires
unless refreshed; its value is the node's wire version, fastpush.broker.redis.wire),
`draining:{node}` (the same, while the node drains). An entry counts only while its node is
alive; a janitor removes a dead node's entries. Questions (fastpush.ops.Query) are answered from
here.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, assert_never

from ... import ops
from ...lastvalue import Cached
from ...permissions import grants
from ..base import LocalHub, Member
from ..resp import RespReply
from .link import Link, log_failure
from .wire import WIRE_VERSION, describe_version

__all__ = ["ClusterRegistry"]

log = logging.getLogger("fastpush.broker")
PEER_POLL_SECONDS = 0.05  # while waiting for the other nodes to come back after an outage
ALIVE = str(WIRE_VERSION).encode()  # the value of this node's alive key: its wire version


class ClusterRegistry:
    def __init__(self, link: Link, node_ttl: float) -> None:
        # The last-value cache's answer (fastpush.broker.redis.lastvalue), set by the broker.
        self.answer_last_value: Callable[[ops.LastValue], Awaitable[list[Cached] | None]] = _no_cache
        self._link = link
        self._ttl = node_ttl
        self.peers: set[str] = set()  # the other live nodes, at the janitor's last look
        self.draining = False  # leaving: announced as `draining:{node}`, so nobody counts on it
        # A connection (hub, id) moving to another node, which has already written it as its own
        # (fastpush.broker.redis.handover): its removal here writes nothing.
        self.moved_out: tuple[str, str] | None = None
        self._foreign_told: set[str] = set()  # live nodes of another wire version, logged once each

    # --- liveness --------------------------------------------------------------------------
    async def announce(self) -> None:
        link, ttl = self._link, int(self._ttl * 1000)
        link.execute("SADD", link.key("nodes"), link.node_id)
        if self.draining:
            link.execute("SET", link.key("draining", link.node_id), b"1", "PX", ttl)
        await link.execute("SET", link.key("alive", link.node_id), ALIVE, "PX", ttl)

    async def others_serving(self) -> bool:
        """Whether a live node other than this one is not draining (see `draining`)."""
        link = self._link
        return await link.script("serving", 0, link.prefix, link.node_id) == 1

    async def foreign_nodes(self) -> dict[str, str]:
        """The live nodes on this Redis that speak another wire version: node -> its version, described."""
        link = self._link
        nodes = [raw.decode() for raw in _list(await link.run("SMEMBERS", link.key("nodes")))]
        nodes = [node for node in nodes if node != link.node_id]
        if not nodes:
            return {}
        values = _list(await link.run("MGET", *(link.key("alive", node) for node in nodes)))
        return {node: _version_in(value) for node, value in zip(nodes, values, strict=True)
                if value is not None and value != ALIVE}

    async def forget_dead_nodes(self) -> None:
        link = self._link
        alive = set()
        for raw in _list(await link.run("SMEMBERS", link.key("nodes"))):
            node = raw.decode()
            if node == link.node_id:
                continue
            value = await link.run("GET", link.key("alive", node))
            if value is not None:
                alive.add(node)
                if value != ALIVE and node not in self._foreign_told:
                    self._foreign_told.add(node)
                    log.error("node %s: node %s on the same Redis speaks wire version %s, this one %d: neither "
                              "acts on the other's messages (see the upgrade notes in docs/operations.md)",
                              link.node_id, node, _version_in(value), WIRE_VERSION)
            else:
                await link.script("forget", 0, link.prefix, node)
                log.info("node %s: forgot dead node %s", link.node_id, node)
        self.peers = alive

    async def await_peers(self, limit: float) -> None:
        """After an outage: wait, at most `limit`, until every other node this one knew alive (or
        Redis does) is subscribed here again. Before that, a send this node took would reach only
        the nodes back already: the others' clients would miss it, and nobody would know."""
        link = self._link
        known = _list(await link.run("SMEMBERS", link.key("nodes")))
        live = await asyncio.gather(*(link.execute("EXISTS", link.key("alive", n.decode())) for n in known))
        waiting = sorted((self.peers | {n.decode() for n, is_live in zip(known, live, strict=True) if is_live})
                         - {link.node_id})
        deadline = time.monotonic() + limit
        while waiting:
            counts = await asyncio.gather(*(link.execute("PUBSUB", "NUMSUB", link.channel("n", node))
                                            for node in waiting))
            waiting = [node for node, reply in zip(waiting, counts, strict=True) if not _has_subscriber(reply)]
            if waiting and time.monotonic() >= deadline:
                log.warning("node %s: %d node(s) did not come back to Redis within %g s, going on without "
                            "them: %s", link.node_id, len(waiting), limit, ", ".join(waiting))
                return
            if waiting:
                link.last_error = f"waiting for {len(waiting)} other node(s) to reconnect to Redis"
                await asyncio.sleep(PEER_POLL_SECONDS)

    async def leave(self) -> None:
        """This node stops: its entries go now rather than when its alive key expires."""
        link = self._link
        await link.run("DEL", link.key("alive", link.node_id), link.key("draining", link.node_id))
        await link.script("forget", 0, link.prefix, link.node_id)

    async def register(self, hubs: Iterable[LocalHub]) -> None:
        """After (re)connecting, as one transaction: what this node wrote before goes (after a
        failover Redis still has it, with connections and groups left during the outage), then
        its state now is written and it announces itself alive. (Redis may also be empty.)"""
        link = self._link
        steps = [link.execute("MULTI"), link.script("forget", 0, link.prefix, link.node_id),
                 link.execute("SADD", link.key("nodes"), link.node_id),
                 link.execute("SET", link.key("alive", link.node_id), ALIVE, "PX", int(self._ttl * 1000))]
        for hub in hubs:
            name = hub.name.lower()
            if hub.members:
                link.subscribe(link.channel("h", name))
            for member in hub.members:
                self._write_connection(name, member)
                for group in member.groups:
                    self._write_membership(name, member, group)
                    link.subscribe(link.group_channel(name, group))
            for user, groups in hub.user_groups.items():
                if groups:
                    steps.append(link.execute("SADD", link.key("ug", name, user), *groups))
        steps.append(link.execute("EXEC"))
        replies = await asyncio.gather(*steps, return_exceptions=True)
        refused = next((r for r in replies if isinstance(r, BaseException)), None)
        if refused is not None:  # then EXEC is EXECABORT: nothing was written
            raise refused
        failed = [str(r) for r in _list(replies[-1]) if isinstance(r, Exception)]
        if failed:
            log.warning("node %s: Redis refused part of this node's registration: %s", link.node_id, failed[0])
        await link.barrier()

    # --- this node's connections -----------------------------------------------------------
    def _write_connection(self, hub: str, member: Member) -> None:
        link = self._link
        link.write("HSET", link.key("c", hub, member.connection_id), "node", link.node_id,
                   "user", member.user_id or "", "roles", json.dumps(sorted(member.roles)))
        link.write("SADD", link.key("conns", link.node_id), f"{hub}\0{member.connection_id}")
        if member.user_id is not None:
            link.write("HSET", link.key("u", hub, member.user_id), member.connection_id, link.node_id)

    def _write_membership(self, hub: str, member: Member, group: str) -> asyncio.Future[RespReply] | None:
        link = self._link
        link.write("SADD", link.key("cg", hub, member.connection_id), group)
        return link.write("HSET", link.key("g", hub, group), member.connection_id,
                          f"{link.node_id}|{member.user_id or ''}")

    def connection_added(self, hub: str, member: Member) -> None:
        self._write_connection(hub.lower(), member)

    def connection_removed(self, hub: str, member: Member) -> None:
        link, name, cid = self._link, hub.lower(), member.connection_id
        if self.moved_out == (name, cid):
            return
        link.write("DEL", link.key("c", name, cid), link.key("cg", name, cid))
        link.write("SREM", link.key("conns", link.node_id), f"{name}\0{cid}")
        if member.user_id is not None:
            link.write("HDEL", link.key("u", name, member.user_id), cid)

    def group_joined(self, hub: str, member: Member, group: str, first: bool) -> asyncio.Future[Any] | None:
        """What to await before the join is in force everywhere (written; subscribed if first)."""
        link = self._link
        if first:
            link.subscribe(link.group_channel(hub, group))
        written = self._write_membership(hub.lower(), member, group)
        if written is None or not first:
            return written
        done = asyncio.gather(written, link.barrier())
        done.add_done_callback(log_failure)
        return done

    def group_left(self, hub: str, member: Member, group: str, last: bool) -> None:
        link, name = self._link, hub.lower()
        if last:
            link.unsubscribe(link.group_channel(name, group))
        if self.moved_out == (name, member.connection_id):
            return
        link.write("SREM", link.key("cg", name, member.connection_id), group)
        link.write("HDEL", link.key("g", name, group), member.connection_id)

    def roles_changed(self, hub: str, member: Member) -> None:
        link = self._link
        link.write("HSET", link.key("c", hub.lower(), member.connection_id), "roles",
                   json.dumps(sorted(member.roles)))

    def record_user_groups(self, op: ops.Op) -> None:
        """Which groups a user's future connections join is cluster state: written by the node
        that takes the call, on the same socket just before the operation is published."""
        link, hub = self._link, op.hub.lower()
        match op:
            case ops.AddUserToGroup():
                link.execute("SADD", link.key("ug", hub, op.user_id), op.group)
            case ops.RemoveUserFromGroup():
                link.execute("SREM", link.key("ug", hub, op.user_id), op.group)
            case ops.RemoveUserFromAllGroups():
                link.execute("DEL", link.key("ug", hub, op.user_id))
            case _:
                pass

    async def user_groups(self, hub: str, user_id: str) -> tuple[str, ...]:
        link = self._link
        return tuple(g.decode() for g in _list(await link.run("SMEMBERS", link.key("ug", hub.lower(), user_id))))

    # --- questions -------------------------------------------------------------------------
    async def answer(self, question: ops.Query) -> object:
        self._link.check()
        hub = question.hub.lower()
        match question:
            case ops.ConnectionExists():
                return await self._roles(hub, question.connection_id) is not None
            case ops.HasPermission():
                roles = await self._roles(hub, question.connection_id)
                return roles is not None and grants(roles, question.permission, question.target)
            case ops.UserExists():
                return bool(await self._live(self._link.key("u", hub, question.user_id)))
            case ops.GroupExists():
                return bool(await self._live(self._link.key("g", hub, question.group)))
            case ops.GroupMembers():
                flat = await self._live(self._link.key("g", hub, question.group))
                members: list[ops.Member] = []
                for i in range(0, len(flat), 2):
                    user = flat[i + 1].split(b"|", 1)[1].decode()
                    members.append((flat[i].decode(), user or None))
                return sorted(members)
            case ops.LastValue():
                return await self.answer_last_value(question)
            case _:
                assert_never(question)

    async def _roles(self, hub: str, connection_id: str) -> list[str] | None:
        link = self._link
        roles = await link.script("conn", 1, link.key("c", hub, connection_id), link.prefix)
        if roles is None:
            return None
        assert isinstance(roles, bytes)
        decoded: list[str] = json.loads(roles)
        return decoded

    async def _live(self, key: str) -> list[bytes]:
        return _list(await self._link.script("live", 1, key, self._link.prefix))


def _has_subscriber(reply: object) -> bool:
    """PUBSUB NUMSUB's answer for one channel: [channel, subscribers]."""
    return isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], int) and reply[1] > 0


def _version_in(alive: object) -> str:
    """The wire version an alive key's value names, described (an unversioned node writes b"1")."""
    text = alive.decode(errors="replace") if isinstance(alive, bytes) else ""
    version = int(text) if text.isdigit() and len(text) < 10 else None
    return describe_version(version if version is not None else 0)


def _list(reply: object) -> list[bytes]:
    """A Redis array reply of bulk strings."""
    assert isinstance(reply, list)
    return reply


async def _no_cache(question: ops.LastValue) -> list[Cached] | None:
    return None
