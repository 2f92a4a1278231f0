"""The metrics of one server, read when /metrics is scraped: the fan-out's C counters, the plain
counters of fastpush.metrics.counters, what the node's hubs hold now, the broker's health, the
process (fastpush.metrics.process), and prometheus_client's platform and garbage-collector
collectors.

Nothing here runs between scrapes. What the hubs hold is counted then, in one pass in C per hub
(fastpush.fanout.census): about a millisecond per 100,000 connections.

Hub names become label values only for hubs this node has (made by an authenticated client, a
REST call that left a record, the embedding program) or the config file names, and only for the
first MAX_HUB_LABELS of them (configured hubs first, then the most connected); the rest are
summed under hub="_other", which no hub can be named (a hub name starts with a letter).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .. import fanout
from ..broker.base import BrokerHealth
from ..hub import Hub
from ..protocol.json_protocol import JSON_RELIABLE_V1, JSON_V1, PROTOBUF_RELIABLE_V1, PROTOBUF_V1
from .counters import COUNTERS, DROP_REASONS, MESSAGE_TYPES, Counters, Histogram
from .process import ProcessCollector

__all__ = ["MAX_HUB_LABELS", "OTHER_HUBS", "ServerCollector", "make_registry"]

MAX_HUB_LABELS = 100
OTHER_HUBS = "_other"
# fastpush.protocol.variants.Variant order: the census counts connections per variant.
_SUBPROTOCOLS = ("raw", JSON_V1, JSON_RELIABLE_V1, PROTOBUF_V1, PROTOBUF_RELIABLE_V1)


def make_registry(hubs: Callable[[], list[Hub]], broker_health: Callable[[], BrokerHealth],
                  configured: Iterable[str] = ()) -> CollectorRegistry:
    """A registry of its own per server (never prometheus_client's global one): this server's
    collector, and the process's CPU, memory and open files, Python's version and its GC."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(hubs, broker_health, configured))
    registry.register(ProcessCollector())
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class ServerCollector:
    """A prometheus_client collector: `collect` builds every fastpush_* family afresh."""

    def __init__(self, hubs: Callable[[], list[Hub]], broker_health: Callable[[], BrokerHealth],
                 configured: Iterable[str] = (), counters: Counters = COUNTERS) -> None:
        self._hubs = hubs
        self._broker_health = broker_health
        self._configured = tuple(configured)
        self._counters = counters
        self._build = _build_labels()  # looking the version up takes milliseconds: once

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("fastpush_build_info", "The fastpush version and the fan-out in use (1 always).",
                                 labels=["version", "fanout"])
        info.add_metric(self._build, 1)
        yield info
        yield from self._hub_gauges()
        yield from self._sessions()
        yield from self._rest()
        yield from _fanout()
        yield from self._upstream()
        yield from self._broker()

    # --- what the hubs hold now -------------------------------------------------------------
    def _hub_gauges(self) -> Iterator[Metric]:
        hubs = self._hubs()
        labelled = _labelled_hubs(hubs, self._configured)
        connections = GaugeMetricFamily("fastpush_connections", "Client connections on this node, reliable "
                                        "sessions waiting for their client included.", labels=["hub", "subprotocol"])
        waiting = GaugeMetricFamily("fastpush_reliable_sessions_waiting", "Reliable sessions whose client is away, "
                                    "kept for the recovery window.", labels=["hub"])
        replay_messages = GaugeMetricFamily("fastpush_replay_buffer_messages", "Messages kept for reliable clients "
                                            "until they acknowledge them.", labels=["hub"])
        replay_bytes = GaugeMetricFamily("fastpush_replay_buffer_bytes", "What the kept messages count against "
                                         "--replay-max-bytes (payload + 64 bytes each).", labels=["hub"])
        groups = GaugeMetricFamily("fastpush_groups", "Groups with a member on this node.", labels=["hub"])
        users = GaugeMetricFamily("fastpush_users", "Users with a connection on this node.", labels=["hub"])
        # Per label: connections per variant (5), waiting sessions, kept messages, kept bytes, groups, users.
        totals: dict[str, list[int]] = {label: [0] * 10 for label in labelled.values()}
        for name in self._configured:
            totals.setdefault(labelled.get(name.lower(), OTHER_HUBS), [0] * 10)
        for hub in hubs:
            per_variant, sessions_waiting, kept, kept_bytes = fanout.census(hub.connections)
            row = totals.setdefault(labelled.get(hub.name.lower(), OTHER_HUBS), [0] * 10)
            counts = (*per_variant, sessions_waiting, kept, kept_bytes, len(hub.tables.groups), len(hub.tables.users))
            for i, count in enumerate(counts):
                row[i] += count
        for label, row in totals.items():
            for variant, subprotocol in enumerate(_SUBPROTOCOLS):
                connections.add_metric([label, subprotocol], row[variant])
            for family, count in zip((waiting, replay_messages, replay_bytes, groups, users), row[5:], strict=True):
                family.add_metric([label], count)
        yield GaugeMetricFamily("fastpush_hubs", "Hubs this node holds something of.", value=len(hubs))
        yield from (connections, waiting, replay_messages, replay_bytes, groups, users)

    # --- sessions, client messages, handshakes --------------------------------------------------
    def _sessions(self) -> Iterator[Metric]:
        c = self._counters
        # Label values known in advance start at 0, so that rate() sees their first increase.
        connects = dict.fromkeys(_SUBPROTOCOLS, 0) | c.connects
        messages = dict.fromkeys(MESSAGE_TYPES, 0) | c.client_messages
        yield _counter("fastpush_connects", "Client sessions begun, by subprotocol (raw: none).", ["subprotocol"],
                       [((k,), v) for k, v in connects.items()])
        yield _counter("fastpush_disconnects", "Client sessions ended, by close code (1006: no close frame; "
                       "other: a code from 3000 to 4999 a client chose).", ["code"],
                       [((k,), v) for k, v in c.disconnects.items()])
        yield _counter("fastpush_client_messages", "Whole messages received from clients, by type (raw: a raw "
                       "WebSocket client's; invalid: malformed).", ["type"],
                       [((k,), v) for k, v in messages.items()])
        yield _counter("fastpush_refused_handshakes", "WebSocket upgrades answered with an HTTP error, by status.",
                       ["status"], [((str(k),), v) for k, v in c.refused_handshakes.items()])
        yield _counter("fastpush_recoveries", "Reliable clients coming back: succeeded, or refused (close 1008; "
                       "503 with the broker away) by reason.", ["outcome", "reason"], c.recoveries.items())
        slow = sum(hub.slow_client_closes for hub in self._hubs())
        yield CounterMetricFamily("fastpush_slow_client_closes", "Clients closed with 1013 for having more than "
                                  "--max-outbound-bytes queued.", value=slow)

    def _rest(self) -> Iterator[Metric]:
        c = self._counters
        yield _counter("fastpush_rest_requests", "HTTP requests answered on the public port (REST operations, "
                       "health, metrics, unknown routes), by operation and status.", ["operation", "status"],
                       [((op, str(status)), v) for (op, status), v in c.rest_requests.items()])
        yield _histogram("fastpush_rest_request_duration_seconds", "Time from a request's last byte to its "
                         "answer, by operation.", ["operation"], c.rest_seconds)

    def _upstream(self) -> Iterator[Metric]:
        c = self._counters
        yield _counter("fastpush_upstream_events", "Events posted to HTTP event handlers, by event (connect, "
                       "connected, disconnected, user) and outcome (ok, status_4xx, status_5xx, status_other, "
                       "timeout, unreachable, not_validated, busy).", ["event", "outcome"], c.upstream_events.items())
        yield _histogram("fastpush_upstream_event_duration_seconds", "Time an event handler took to answer "
                         "(abuse-protection validation included), by event.", ["event"], c.upstream_seconds)

    def _broker(self) -> Iterator[Metric]:
        health = self._broker_health()
        up = GaugeMetricFamily("fastpush_broker_up", "1 while the broker (memory, or Redis) serves this node.",
                               labels=["broker"])
        up.add_metric([health["broker"]], 1 if health["healthy"] else 0)
        yield up
        yield CounterMetricFamily("fastpush_broker_reconnects", "Times this node connected to Redis again after "
                                  "losing it.", value=self._counters.broker_reconnects)
        yield CounterMetricFamily("fastpush_broker_loss_closes", "Clients closed with 1012 because this node was "
                                  "without Redis for --broker-loss-timeout.", value=self._counters.broker_loss_closes)
        dropped = dict.fromkeys(DROP_REASONS, 0) | self._counters.dropped_node_messages
        yield _counter("fastpush_broker_dropped_messages", "Messages from Redis this node did not act on, by reason "
                       "(version: another wire version; malformed: no envelope; failed: its handling failed).",
                       ["reason"], [((k,), v) for k, v in dropped.items()])
        yield _histogram("fastpush_broker_publish_duration_seconds", "Time Redis took to take an operation "
                         "(confirmed ones: until every node concerned applied it).", [],
                         {(): self._counters.broker_publish_seconds})


def _build_labels() -> list[str]:
    try:
        installed = version("fastpush")
    except PackageNotFoundError:
        installed = "unknown"
    return [installed, "compiled" if fanout.IMPLEMENTATION == "fastpush._fanout" else "python"]


def _fanout() -> Iterator[Metric]:
    counts = fanout.fanout_counts()
    plain = (("fastpush_broadcasts", "Sends fanned out on this node (to a hub, group, user or connection; an "
              "event handler's reply to its client).", "broadcasts"),
             ("fastpush_deliveries", "Messages the fan-out wrote or queued to a member's socket.", "deliveries"),
             ("fastpush_sent_bytes", "Bytes written to client sockets: messages, acks and system messages (not "
              "pings, pongs or close frames).", "sent_bytes"),
             ("fastpush_coalesced_frames", "Frames that left in one write with an earlier frame of their "
              "connection's loop turn.", "coalesced_frames"),
             ("fastpush_slow_client_dropped_bytes", "Queued bytes dropped when a client was closed as too slow (a "
              "reliable one gets them again when it recovers).", "dropped_bytes"),
             ("fastpush_fanout_failures", "Members whose write failed inside a fan-out (the others still got the "
              "message; logged at most once a second).", "recipient_failures"))
    for name, documentation, key in plain:
        yield CounterMetricFamily(name, documentation, value=counts[key])
    writes = CounterMetricFamily("fastpush_socket_writes", "Writes to client sockets: direct (one frame: alone in "
                                 "its loop turn, or a resend) or coalesced (several frames in one write: a turn's "
                                 "burst, or what a backed-up socket held when it drained).", labels=["mode"])
    writes.add_metric(["direct"], counts["direct_writes"])
    writes.add_metric(["coalesced"], counts["coalesced_writes"])
    yield writes
    family = HistogramMetricFamily("fastpush_fanout_duration_seconds", "Time one fan-out took to frame a send and "
                                   "write or queue it to every member on this node.")
    family.add_metric([], _buckets(fanout.FANOUT_BUCKETS, counts["fanout_buckets"]), counts["fanout_seconds"])
    yield family


def _labelled_hubs(hubs: list[Hub], configured: Sequence[str]) -> dict[str, str]:
    """Lower-cased hub name -> its label: configured hubs first, then the most connected, up to
    MAX_HUB_LABELS; hubs past that are left out (summed under OTHER_HUBS)."""
    chosen: dict[str, str] = {}
    for name in configured:
        if len(chosen) < MAX_HUB_LABELS:
            chosen.setdefault(name.lower(), name)
    for hub in sorted(hubs, key=lambda h: (-h.connection_count, h.name.lower())):
        if len(chosen) >= MAX_HUB_LABELS:
            break
        chosen.setdefault(hub.name.lower(), hub.name)
    return chosen


def _counter(name: str, documentation: str, labels: list[str],
             samples: Iterable[tuple[tuple[str, ...], int]]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def _histogram(name: str, documentation: str, labels: list[str], histograms: dict[str, Histogram] |
               dict[tuple[()], Histogram]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for key, histogram in histograms.items():
        values = [key] if isinstance(key, str) else list(key)
        family.add_metric(values, _buckets(histogram.bounds, histogram.counts), histogram.total)
    return family


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Cumulative counts per `le` bound, +Inf last, from counts per bucket."""
    cumulative, total = [], 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        total += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(total)))
    return cumulative
