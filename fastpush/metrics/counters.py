"""What the server counts outside the fan-out loop, as plain numbers of this process.

Counting is an integer or dict addition on the event loop's thread, never a call into
prometheus_client (whose metric objects take a lock per increment): the collector
(fastpush.metrics.collector) reads these when /metrics is scraped, as it reads the fan-out's own
C counters (fastpush.fanout.fanout_counts). Every label value here comes from a short fixed list,
whatever clients send: a close code a client chose, a user event's name or a refusal's text are
mapped onto it, so no label can grow per connection, user, group or event name.

One set per process, like the fan-out's counters: an embedding program that runs several
Servers in one process sees their sum on each one's /metrics.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Final, TypeVar

from ..protocol.json_protocol import (
    GroupState,
    Ignored,
    Invoke,
    JoinGroup,
    LeaveGroup,
    Ping,
    Request,
    SendEvent,
    SendToGroup,
    SequenceAck,
    StreamMessage,
    StreamStart,
)

__all__ = ["COUNTERS", "Counters", "Histogram", "LATENCY_BUCKETS", "MESSAGE_TYPES", "SYSTEM_EVENTS", "DROP_REASONS",
           "close_code_label", "recovery_refusal_reason"]

_K = TypeVar("_K")

# Seconds: REST requests, upstream events, broker publishes (sub-millisecond to the 20 s upstream timeout).
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                          20.0)
SYSTEM_EVENTS: Final = ("connect", "connected", "disconnected")  # any other event name counts as "user"
# Why a message from Redis was not acted on (fastpush.broker.redis.wire): another wire version,
# bytes that are no envelope, or an envelope its handler failed on.
DROP_REASONS: Final = ("version", "malformed", "failed")

_MESSAGE_TYPES: Final[dict[type, str]] = {
    SendToGroup: "sendToGroup", JoinGroup: "joinGroup", LeaveGroup: "leaveGroup", SendEvent: "event",
    Ping: "ping", SequenceAck: "sequenceAck", Invoke: "invoke", StreamStart: "streamStart",
    StreamMessage: "stream", GroupState: "groupState", Ignored: "other"}
MESSAGE_TYPES: Final = (*dict.fromkeys(_MESSAGE_TYPES.values()), "raw", "invalid")  # every `type` label

# Why a reliable session could not be resumed, told apart by the words of the refusal
# (fastpush.reliable.refusal and the server's own); tests/unit/test_metrics_counters.py checks
# that every refusal reliable.refusal can give maps to one of them.
_REFUSALS: Final = (("has ended", "ended"), ("overflowed", "buffer_overflowed"), ("speaks", "wrong_subprotocol"),
                    ("token does not match", "bad_token"), ("not found", "not_found"),
                    ("unavailable", "broker_unavailable"))


class Histogram:
    """Counts per bucket (not cumulative: the collector adds them up), the last one past the
    largest bound, and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: Prometheus' `le`
        self.total += value


def close_code_label(code: int | None) -> str:
    """A close code as a label: those RFC 6455 and IANA define (1000-1015) by number, None (the
    socket ended without a close frame) as 1006, any code a client chose (3000-4999) as other."""
    if code is None:
        return "1006"
    return str(code) if 1000 <= code <= 1015 else "other"


def recovery_refusal_reason(text: str) -> str:
    for words, reason in _REFUSALS:
        if words in text:
            return reason
    return "other"


class Counters:
    def __init__(self) -> None:
        self.connects: dict[str, int] = {}  # new sessions, by subprotocol ("raw": none)
        self.disconnects: dict[str, int] = {}  # ended sessions, by close_code_label
        self.client_messages: dict[str, int] = {}  # whole client messages, by type
        self.refused_handshakes: dict[int, int] = {}  # by HTTP status (a refused recovery: by its close code)
        self.recoveries: dict[tuple[str, str], int] = {}  # (outcome, reason)
        self.rest_requests: dict[tuple[str, int], int] = {}  # (operation, status)
        self.rest_seconds: dict[str, Histogram] = {}  # by operation
        self.upstream_events: dict[tuple[str, str], int] = {}  # (event, outcome)
        self.upstream_seconds: dict[str, Histogram] = {}  # by event
        self.broker_reconnects = 0
        self.broker_publish_seconds = Histogram()
        self.broker_loss_closes = 0  # clients closed because the broker was away too long
        self.dropped_node_messages: dict[str, int] = {}  # from other nodes, not acted on: by reason

    # --- sessions (fastpush.session) --------------------------------------------------------
    def connected(self, subprotocol: str | None, recovered: bool) -> None:
        """A session began, or a reliable one was resumed (`recovered`: counted as a recovery)."""
        if recovered:
            _add(self.recoveries, ("succeeded", "none"))
        else:
            _add(self.connects, subprotocol or "raw")

    def disconnected(self, code: int | None) -> None:
        _add(self.disconnects, close_code_label(code))

    def client_message(self, request: Request | None) -> None:
        """A whole message from a subprotocol client, parsed (None: malformed); raw clients' are "raw"."""
        _add(self.client_messages, "invalid" if request is None else _MESSAGE_TYPES.get(type(request), "other"))

    def raw_message(self) -> None:
        _add(self.client_messages, "raw")

    # --- the front door (fastpush.app) ------------------------------------------------------
    def handshake_refused(self, status: int) -> None:
        _add(self.refused_handshakes, status)

    def recovery_refused(self, reason: str) -> None:
        """`reason`: the text the client is told (recovery_refusal_reason picks the label)."""
        _add(self.recoveries, ("refused", recovery_refusal_reason(reason)))

    # --- REST (fastpush.http.rest) ----------------------------------------------------------
    def rest_request(self, operation: str, status: int, seconds: float) -> None:
        _add(self.rest_requests, (operation, status))
        _histogram(self.rest_seconds, operation).observe(seconds)

    # --- event handlers (fastpush.events.upstream) ------------------------------------------
    def upstream_event(self, event: str, outcome: str, seconds: float) -> None:
        kind = event if event in SYSTEM_EVENTS else "user"
        _add(self.upstream_events, (kind, outcome))
        _histogram(self.upstream_seconds, kind).observe(seconds)

    # --- the cluster broker -----------------------------------------------------------------
    def broker_reconnected(self) -> None:
        self.broker_reconnects += 1

    def broker_published(self, seconds: float) -> None:
        self.broker_publish_seconds.observe(seconds)

    def broker_loss_closed(self) -> None:
        self.broker_loss_closes += 1

    def node_message_dropped(self, reason: str) -> None:
        """`reason`: one of DROP_REASONS."""
        _add(self.dropped_node_messages, reason)


def _add(table: dict[_K, int], key: _K) -> None:
    table[key] = table.get(key, 0) + 1


def _histogram(table: dict[str, Histogram], key: str) -> Histogram:
    histogram = table.get(key)
    if histogram is None:
        histogram = table[key] = Histogram()
    return histogram


COUNTERS: Final = Counters()
