"""The last-value cache with a Redis broker: the cache lives in Redis, written in one script with
the send's PUBLISH, so the cache and the channel agree on which sends came before which.

Each send to a cached group runs `lastvalue` (fastpush.broker.redis.scripts): it numbers the send
from the hub's counter (`lvc:{hub}`), appends it to the group's list (`lv:{hub}:{group}`, the
newest `lastValueDepth`), keeps the hub's bounds (`lvz:{hub}`, the groups by their latest number;
`lvb:{hub}`, their bytes; least recently sent evicted first) and publishes the same numbered entry
on the group's channel. An entry is the envelope behind a byte msgpack never starts with (0xC1),
its number and a colon: a receiving node reads the number and knows where the send stands
against a read of the list. docs/architecture.md says how a node joins without gap or duplicate.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec

from ... import ops
from ...lastvalue import Cached, LastValuePolicy
from ..errors import BrokerUnavailable
from ..resp import RedisGone, RespReply
from .bus import decode_envelope, split_entry
from .link import Link, unavailable
from .wire import WIRE_VERSION, version_of

__all__ = ["RedisLastValues"]

log = logging.getLogger("fastpush.broker")


class RedisLastValues:
    """The broker's part of the cache: which sends go through the script, and reading a group."""

    def __init__(self, link: Link, policy_of: Callable[[str], LastValuePolicy | None]) -> None:
        self._link = link
        self._policy_of = policy_of  # the hub's lastValueGroups settings (the same on every node)
        self.generation = 0  # counts connections to Redis: see fastpush.lastvalue.ClusterCache

    def policy(self, hub: str, group: str) -> LastValuePolicy | None:
        policy = self._policy_of(hub)
        return policy if policy is not None and policy.wants(group) else None

    async def publish(self, hub: str, group: str, channel: bytes, envelope: bytes,
                      policy: LastValuePolicy) -> RespReply:
        """Cache and publish in one step; the number of nodes that received it."""
        link = self._link
        keys = (link.key("lv", hub, group), link.key("lvz", hub), link.key("lvb", hub), link.key("lvc", hub))
        return await link.script("lastvalue", 4, *keys, channel, envelope, policy.depth, policy.max_groups,
                                 policy.max_bytes, link.key("lv", hub, ""), group)

    async def read(self, hub: str, group: str) -> list[Cached] | None:
        """The group's cached sends, oldest first, once this node's subscriber has read everything
        published before the list was (a PING there after the read: its answer follows them);
        None when Redis cannot be read (logged)."""
        try:
            return await self._read(hub, group)
        except BrokerUnavailable as exc:
            log.warning("node %s: no last value of group %r in hub %s: %s", self._link.node_id, group, hub, exc)
            return None

    async def _read(self, hub: str, group: str) -> list[Cached]:
        link = self._link
        link.check()
        try:
            raw = await link.run("LRANGE", link.key("lv", hub.lower(), group), 0, -1)
            await link.ping_subscriber()  # not a barrier: the PING must follow the LRANGE's answer
        except (RedisGone, OSError) as exc:
            raise unavailable(exc) from None
        entries = [_cached(entry) for entry in raw] if isinstance(raw, list) else []
        return [entry for entry in entries if entry is not None]

    async def answer(self, question: ops.LastValue) -> list[Cached] | None:
        """REST's question, from Redis: whichever node holds the group's members."""
        if self.policy(question.hub, question.group) is None:
            return None
        now = time.monotonic()
        return [e for e in await self._read(question.hub, question.group) if not e.expired(now)]


def _cached(entry: object) -> Cached | None:
    """A cached send; None for an entry a node of another wire version wrote (or garbage): left
    out, as the bus drops such a message (fastpush.broker.redis.wire)."""
    try:
        assert isinstance(entry, bytes)
        number, envelope = split_entry(entry)
        if version_of(envelope) != WIRE_VERSION:
            return None
        data = decode_envelope(envelope).data
        op = ops.decode(data) if data is not None else None
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None
    if not isinstance(op, ops.SendToGroup):
        return None
    return Cached.of(op.payload, op.from_user_id, op.expires_at, op.excluded, op.filter, number)
