"""The overview's figures and their last 15 minutes, sampled from the server's metrics registry.

The dashboard keeps no counters of its own: every SAMPLE_SECONDS it collects the same registry
that /metrics exposes (fastpush.metrics.collector: the fan-out's C counters, the per-process
counters, the hubs' census) and keeps one row of figures, HISTORY_SAMPLES of them. Counters
become rates per second between two samples. One sample costs one collection, as one scrape
does (the census walks the connections in C: about a millisecond per 100,000).
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol

__all__ = ["HISTORY_SAMPLES", "SAMPLE_SECONDS", "SERIES", "Overview"]

SAMPLE_SECONDS: Final = 2.0
HISTORY_SAMPLES: Final = 450  # 15 minutes of samples

SUBPROTOCOLS: Final = ("raw", "json.webpubsub.azure.v1", "json.reliable.webpubsub.azure.v1",
                       "protobuf.webpubsub.azure.v1", "protobuf.reliable.webpubsub.azure.v1")

# (series name, metric sample name, labels it must have, "gauge" (as read) or "rate" (per second)).
# Samples of one name whose labels match are added up (e.g. connections over every hub).
SERIES: Final[tuple[tuple[str, str, dict[str, str], str], ...]] = (
    ("hubs", "fastpush_hubs", {}, "gauge"),
    ("connections", "fastpush_connections", {}, "gauge"),
    *((f"connections:{p}", "fastpush_connections", {"subprotocol": p}, "gauge") for p in SUBPROTOCOLS),
    ("users", "fastpush_users", {}, "gauge"),
    ("groups", "fastpush_groups", {}, "gauge"),
    ("messagesIn", "fastpush_client_messages_total", {}, "rate"),
    ("messagesOut", "fastpush_broadcasts_total", {}, "rate"),
    ("deliveries", "fastpush_deliveries_total", {}, "rate"),
    ("slowCloses", "fastpush_slow_client_closes_total", {}, "gauge"),
    ("recoveries", "fastpush_recoveries_total", {"outcome": "succeeded"}, "gauge"),
    ("recoveriesRefused", "fastpush_recoveries_total", {"outcome": "refused"}, "gauge"),
    ("brokerUp", "fastpush_broker_up", {}, "gauge"),
    ("brokerReconnects", "fastpush_broker_reconnects_total", {}, "gauge"),
)


class _Sample(Protocol):
    name: str
    labels: dict[str, str]
    value: float


class _Family(Protocol):
    samples: list[_Sample]  # prometheus_client's Metric: its samples are (name, labels, value, ...)


class Overview:
    """`collect` is a prometheus_client registry's collect; `sample()` is called every SAMPLE_SECONDS."""

    def __init__(self, collect: Callable[[], Iterable[_Family]]) -> None:
        self._collect = collect
        self._history: collections.deque[tuple[float, tuple[float, ...]]] = collections.deque(maxlen=HISTORY_SAMPLES)
        self._last: tuple[float, tuple[float, ...]] | None = None  # the previous raw reading, for rates

    def sample(self) -> None:
        raw = self._read()
        now = time.time()
        previous = self._last
        self._last = (now, raw)
        if previous is None:
            return
        elapsed = max(now - previous[0], 1e-3)
        row = tuple(value if kind == "gauge" else max(value - before, 0.0) / elapsed
                    for (_, _, _, kind), value, before in zip(SERIES, raw, previous[1], strict=True))
        self._history.append((now, row))

    def history(self, since: float = 0.0) -> dict[str, object]:
        """Samples newer than `since` (seconds since the epoch), as columns: {"time": [...], name: [...]}."""
        rows = [(t, row) for t, row in self._history if t > since]
        columns: dict[str, object] = {"time": [round(t, 3) for t, _ in rows]}
        for i, (name, _, _, _) in enumerate(SERIES):
            columns[name] = [round(row[i], 3) for _, row in rows]
        return {"series": columns, "sampleSeconds": SAMPLE_SECONDS, "historySamples": HISTORY_SAMPLES}

    def _read(self) -> tuple[float, ...]:
        values = dict.fromkeys(range(len(SERIES)), 0.0)
        wanted: dict[str, list[int]] = {}
        for i, (_, sample_name, _, _) in enumerate(SERIES):
            wanted.setdefault(sample_name, []).append(i)
        for family in self._collect():
            for sample in family.samples:
                for i in wanted.get(sample.name, ()):
                    labels = SERIES[i][2]
                    if all(sample.labels.get(k) == v for k, v in labels.items()):
                        values[i] += sample.value
        return tuple(values.values())
