"""fastpush.lastvalue's store, without sockets: depth, expiry, the per-hub bounds, and a mirror of
Redis that keeps only the groups it was filled for and forgets them all when the node reconnects."""
from __future__ import annotations

import time

import msgspec

from fastpush.lastvalue import Cached, LastValuePolicy, LastValues, render
from fastpush.protocol.payload import DataType, Payload


def entry(data: bytes, seq: int = 0, expires_at: float = 0.0) -> Cached:
    return Cached.of(Payload(DataType.TEXT, data), None, expires_at, (), None, seq)


class FakeCluster:
    generation = 1

    async def read(self, hub, group):
        return []


def test_depth_keeps_the_newest_oldest_first():
    cache = LastValues(LastValuePolicy(["p.*"], depth=2))
    for value in (b"1", b"2", b"3"):
        cache.record("p.a", entry(value))
    assert [e.payload.data for e in cache.latest("p.a")] == [b"2", b"3"]
    assert cache.latest("p.b") == []


def test_expired_entries_are_left_out_and_one_expired_on_arrival_counts_as_expired():
    cache = LastValues(LastValuePolicy(["p.*"], depth=3))
    cache.record("p.a", entry(b"kept"))
    cache.record("p.a", entry(b"late", expires_at=time.time() - 1))
    cache.record("p.a", Cached(Payload(DataType.TEXT, b"gone"), None, time.monotonic() - 0.001, (), None))
    assert [e.payload.data for e in cache.latest("p.a")] == [b"kept"]


def test_the_least_recently_sent_group_goes_first():
    cache = LastValues(LastValuePolicy(["**"], max_groups=2))
    for group in ("a", "b", "a", "c"):
        cache.record(group, entry(group.encode()))
    assert cache.latest("b") == [] and cache.latest("a") and cache.latest("c")


def test_a_mirror_keeps_only_filled_groups_and_forgets_them_on_reconnect():
    cluster = FakeCluster()
    cache = LastValues(LastValuePolicy(["p.*"], depth=2), cluster)
    cache.record("p.a", entry(b"unheard", 1))
    assert not cache.holds("p.a") and len(cache) == 0
    cache.fill("p.a", [entry(b"1", 1), entry(b"2", 2), entry(b"3", 3)])
    assert [e.seq for e in cache.latest("p.a")] == [2, 3]
    cache.record("p.a", entry(b"4", 4))
    assert [e.seq for e in cache.latest("p.a")] == [3, 4]
    cluster.generation += 1  # the node reconnected to Redis: sends may have been missed
    assert not cache.holds("p.a") and cache.bytes == 0


def test_render_is_what_a_json_client_gets():
    items = [Cached.of(Payload(DataType.JSON, b'{"a":1}'), "u", 0.0, (), None),
             Cached.of(Payload(DataType.BINARY, b"\x00\x01"), None, 0.0, (), None)]
    assert msgspec.json.decode(msgspec.json.encode(render(items))) == [
        {"dataType": "json", "data": {"a": 1}, "fromUserId": "u"}, {"dataType": "binary", "data": "AAE="}]
