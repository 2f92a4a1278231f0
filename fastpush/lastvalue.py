"""The last-value cache (a fastpush extension): the latest messages sent to a group, kept so a
connection that joins it gets them at once, before the live ones.

A hub whose settings name `lastValueGroups` patterns keeps, per matching group, the newest
`lastValueDepth` messages sent to it (`LastValues.record`, once per group send, never per
recipient). A join to such a group writes them to the joining connection (fastpush.hub, with
`LastValues.latest`) through the fan-out's own path, so a reliable client numbers them like any message and an expired
one is never written. Record and serve run on the node's loop between two sends: the joiner gets
every cached message, then every later send, none twice and none missed.

Memory is bounded per hub: at most `max_groups` groups and `max_bytes` of payload; the group written
least recently goes first. A message too large for the hub's bytes is not cached, and the group's
older ones are dropped with it: a joiner never gets a value older than the group's latest.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import msgspec

from .expiry import NEVER, local_deadline
from .permissions import compile_group_pattern
from .protocol.payload import DataType, Payload

__all__ = ["LastValuePolicy", "LastValues", "Cached", "ClusterCache", "MAX_DEPTH", "MAX_PATTERNS",
           "DEFAULT_MAX_GROUPS", "DEFAULT_MAX_BYTES", "ENTRY_OVERHEAD_BYTES", "render"]

MAX_DEPTH = 100  # lastValueDepth: messages kept per group, and written to each joiner
MAX_PATTERNS = 100  # lastValueGroups of one hub: each is tried once per group send
DEFAULT_MAX_GROUPS = 10_000  # lastValueMaxGroups: groups with cached messages, per hub
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # lastValueMaxBytes: cached payload bytes, per hub
KNOWN_GROUPS = 10_000  # group names whose match is remembered, per hub (then forgotten all at once)
ENTRY_OVERHEAD_BYTES = 128  # what one cached message counts beyond its payload (its record, its group)


class LastValuePolicy:
    """Which groups of a hub are cached, how deep, within what bounds (checked by fastpush.config)."""

    __slots__ = ("_matchers", "_known", "depth", "max_groups", "max_bytes")

    def __init__(self, patterns: Iterable[str], depth: int = 1, max_groups: int = DEFAULT_MAX_GROUPS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._matchers: tuple[Callable[[str], object], ...] = tuple(
            compile_group_pattern(p).fullmatch for p in patterns)
        self._known: dict[str, bool] = {}  # groups already matched: asked at every group send
        self.depth = depth
        self.max_groups = max_groups
        self.max_bytes = max_bytes

    def wants(self, group: str) -> bool:
        known = self._known.get(group)
        if known is None:
            if len(self._known) >= KNOWN_GROUPS:
                self._known.clear()
            known = self._known[group] = any(match(group) for match in self._matchers)
        return known


class Cached(msgspec.Struct, frozen=True):
    """One cached send, as the group's members got it."""

    payload: Payload
    from_user_id: str | None
    deadline: float  # time.monotonic() past which it is never written (fastpush.expiry); NEVER: no TTL
    excluded: tuple[str, ...]  # the send's excluded connections, excluded from the cache's answer too
    filter: str | None  # the send's OData filter, which a joiner must pass as a member had to
    seq: int = 0  # with a Redis broker, the send's place in the hub's order of cached sends

    @classmethod
    def of(cls, payload: Payload, from_user_id: str | None, expires_at: float, excluded: tuple[str, ...],
           filter: str | None, seq: int = 0) -> Cached:
        """A send as it arrived here; one that expired on its way is kept as expired (a deeper
        cache still serves the group's older messages that have not)."""
        deadline = local_deadline(expires_at)
        return cls(payload, from_user_id, -1.0 if deadline is None else deadline, excluded, filter, seq)

    @property
    def size(self) -> int:
        return len(self.payload.data) + ENTRY_OVERHEAD_BYTES

    def expired(self, now: float) -> bool:
        return self.deadline != NEVER and self.deadline <= now


class ClusterCache(Protocol):
    """Where the cache lives with a Redis broker (fastpush.broker.redis.lastvalue)."""

    @property
    def generation(self) -> int:
        """Changes each time the node connects to Redis again: what it mirrored may have gaps."""

    def read(self, hub: str, group: str) -> Awaitable[list[Cached] | None]:
        """The group's cached sends, oldest first, once every send published before the read
        has reached this node's subscriptions; None when Redis cannot be read."""


class LastValues:
    """One hub's cache on this node: the cache itself on a single node; with a Redis broker
    (`cluster`), a mirror of the groups this node has members of, filled from Redis at the first
    join (fastpush.hub) and kept by the sends that arrive while it is subscribed."""

    __slots__ = ("policy", "_groups", "bytes", "cluster", "_generation")

    def __init__(self, policy: LastValuePolicy, cluster: ClusterCache | None = None) -> None:
        self.policy = policy
        self._groups: OrderedDict[str, deque[Cached]] = OrderedDict()  # least recently written first
        self.bytes = 0
        self.cluster = cluster
        self._generation = cluster.generation if cluster is not None else 0

    def __len__(self) -> int:
        return len(self._groups)

    def holds(self, group: str) -> bool:
        """Whether the group's cache is here: always on one node; a mirrored group once filled."""
        if self.cluster is None:
            return True
        if self._generation != self.cluster.generation:  # Redis was lost meanwhile: mirrors may have gaps
            self._groups.clear()
            self.bytes = 0
            self._generation = self.cluster.generation
        return group in self._groups

    def fill(self, group: str, entries: list[Cached]) -> None:
        """A mirrored group's cache as Redis had it."""
        self.drop(group)
        if len(self._groups) >= self.policy.max_groups:
            self._evict_oldest()
        self._groups[group] = deque()
        for entry in entries[-self.policy.depth:]:
            self.record(group, entry)

    def record(self, group: str, entry: Cached) -> None:
        """A send to `group` (a cached one: the caller asked `policy.wants`). A mirror keeps only
        the groups it was filled for."""
        if self.cluster is not None and not self.holds(group):
            return
        policy = self.policy
        if entry.size > policy.max_bytes:
            self.drop(group)  # the latest value cannot be kept: neither can older ones be served
            return
        entries = self._groups.get(group)
        if entries is None:
            if len(self._groups) >= policy.max_groups:
                self._evict_oldest()
            entries = self._groups[group] = deque()
        else:
            self._groups.move_to_end(group)
        entries.append(entry)
        self.bytes += entry.size
        if len(entries) > policy.depth:
            self.bytes -= entries.popleft().size
        while self.bytes > policy.max_bytes:
            self._evict_oldest()

    def drop(self, group: str) -> None:
        entries = self._groups.pop(group, None)
        if entries is not None:
            self.bytes -= sum(e.size for e in entries)

    def _evict_oldest(self) -> None:
        _, entries = self._groups.popitem(last=False)
        self.bytes -= sum(e.size for e in entries)

    def latest(self, group: str) -> list[Cached]:
        """The group's cached messages that have not expired, oldest first."""
        entries = self._groups.get(group)
        if not entries:
            return []
        now = time.monotonic()
        return [e for e in entries if not e.expired(now)]


def render(entries: Iterable[Cached]) -> list[dict[str, object]]:
    """The REST answer's shape: what a JSON-subprotocol client receives of each message (its
    dataType and data, its fromUserId when a client sent it), oldest first."""
    out: list[dict[str, object]] = []
    for entry in entries:
        payload = entry.payload
        data: object
        if payload.data_type is DataType.JSON:
            data = msgspec.Raw(payload.data)
        elif payload.data_type is DataType.TEXT:
            data = payload.data.decode()
        else:
            data = payload.data  # msgspec writes bytes as base64, as the JSON subprotocol does
        item: dict[str, object] = {"dataType": payload.data_type.value, "data": data}
        if entry.from_user_id is not None:
            item["fromUserId"] = entry.from_user_id
        out.append(item)
    return out
