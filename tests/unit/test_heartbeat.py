"""The keep-alive sweep, hub by hub, driven with explicit clock readings (no waiting): each hub is
swept at its own webSocketKeepAliveIntervalInSeconds (else the server's --keepalive), quiet
clients are pinged, silent ones dropped after max(--idle-timeout, 3 intervals)."""
from __future__ import annotations

import itertools
import weakref

from fastpush.heartbeat import Heartbeat, idle_timeout

_ids = itertools.count()


class Transport:
    def __init__(self) -> None:
        self.pings = 0
        self.is_disconnected = False

    def send_ping(self) -> None:
        self.pings += 1

    def disconnect(self, graceful: bool = True) -> None:
        self.is_disconnected = True


class Conn:
    def __init__(self, last_seen: float) -> None:
        self.connection_id = f"c{next(_ids)}"
        self.last_seen = last_seen
        self.transport = Transport()


class StubHub:
    def __init__(self, keepalive: float | None, *conns: Conn) -> None:
        self.keepalive_seconds = keepalive
        self.tables = {c.connection_id: c for c in conns}

    @property
    def connection_ids(self) -> list[str]:
        return list(self.tables)

    def connection(self, connection_id: str) -> Conn | None:
        return self.tables.get(connection_id)

    def add(self, conn: Conn) -> None:
        self.tables[conn.connection_id] = conn


def test_each_hub_is_swept_at_its_own_interval():
    fast_client, slow_client = Conn(last_seen=0.0), Conn(last_seen=0.0)
    fast, default = StubHub(1.0, fast_client), StubHub(None, slow_client)
    heartbeat = Heartbeat(lambda: [fast, default], keepalive=20.0, idle=600.0, configured=[1.0])
    for second in range(1, 20):  # one tick a second: the shortest interval
        heartbeat.sweep(float(second))
    assert fast_client.transport.pings == 19  # swept every second, quiet for a second or more each time
    assert slow_client.transport.pings == 0  # quiet for 19 s: not yet 20
    heartbeat.sweep(20.0)
    assert slow_client.transport.pings == 0  # its hub was swept at 1 s; the next sweep is due at 21 s
    heartbeat.sweep(21.0)
    assert slow_client.transport.pings == 1


def test_a_client_that_answers_is_not_pinged():
    client = Conn(last_seen=0.0)
    hub = StubHub(5.0, client)
    heartbeat = Heartbeat(lambda: [hub], keepalive=20.0, idle=60.0, configured=[5.0])
    for second in range(5, 50, 5):
        client.last_seen = second - 1.0  # it said something a second ago
        heartbeat.sweep(float(second))
    assert client.transport.pings == 0 and not client.transport.is_disconnected


def test_silent_clients_are_dropped_after_three_intervals_at_least():
    assert idle_timeout(20.0, 60.0) == 60.0  # the defaults: unchanged
    assert idle_timeout(50.0, 60.0) == 150.0  # a long interval: pinged twice before the drop
    assert idle_timeout(1.0, 60.0) == 60.0
    gone, quiet = Conn(last_seen=0.0), Conn(last_seen=0.0)
    short, long = StubHub(10.0, gone), StubHub(50.0, quiet)
    heartbeat = Heartbeat(lambda: [short, long], keepalive=20.0, idle=60.0, configured=[10.0, 50.0])
    heartbeat.sweep(100.0)
    assert gone.transport.is_disconnected  # silent 100 s > max(60, 30)
    assert not quiet.transport.is_disconnected and quiet.transport.pings == 1  # 100 s < max(60, 150)


def test_a_sweep_is_spread_over_its_interval():
    """Clients that all went quiet at once are pinged a slice per tick, not in one loop turn, and each
    exactly once per interval."""
    clients = [Conn(last_seen=0.5) for _ in range(1000)]
    hub = StubHub(None, *clients)
    heartbeat = Heartbeat(lambda: [hub], keepalive=20.0, idle=600.0)
    for second in range(1, 21):  # the first sweep (1 s to 20 s): nobody quiet for 20 s yet
        heartbeat.sweep(float(second))
    assert sum(c.transport.pings for c in clients) == 0
    pinged_per_tick = []
    for second in range(21, 41):  # the second sweep
        before = sum(c.transport.pings for c in clients)
        heartbeat.sweep(float(second))
        pinged_per_tick.append(sum(c.transport.pings for c in clients) - before)
    assert all(c.transport.pings == 1 for c in clients)
    assert max(pinged_per_tick) == 50  # 1,000 over 20 ticks


def test_connections_that_arrive_during_a_sweep_are_in_the_next_and_gone_hubs_are_forgotten():
    early = Conn(last_seen=0.5)
    hub = StubHub(None, early)
    hubs = [hub]
    heartbeat = Heartbeat(lambda: hubs, keepalive=20.0, idle=600.0)
    heartbeat.sweep(1.0)
    late = Conn(last_seen=0.5)
    hub.add(late)
    for second in range(2, 21):
        heartbeat.sweep(float(second))
    assert late.transport.pings == 0  # not in the sweep that began before it
    for second in range(21, 41):
        heartbeat.sweep(float(second))
    assert early.transport.pings == late.transport.pings == 1
    hubs.clear()
    heartbeat.sweep(41.0)
    assert not heartbeat._sweeps  # nothing kept for a hub the node no longer holds


def test_a_connection_that_closes_during_a_sweep_is_skipped_and_not_kept_alive():
    clients = [Conn(last_seen=0.5) for _ in range(20)]
    hub = StubHub(None, *clients)
    heartbeat = Heartbeat(lambda: [hub], keepalive=20.0, idle=600.0)
    heartbeat.sweep(21.0)  # a sweep begins: the first of 20 slices
    closed = clients.pop()
    del hub.tables[closed.connection_id]
    gone = weakref.ref(closed)
    del closed
    assert gone() is None  # the sweep holds ids, not connections
    for second in range(22, 41):
        heartbeat.sweep(float(second))
    assert all(c.transport.pings == 1 for c in clients)
