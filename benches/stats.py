"""Percentiles and the latency curve the table, the JSON and the plot are made of."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["CURVE_PERCENTILES", "percentile", "spread", "summarize_ns"]

# Denser towards the tail, where the interesting part of a latency distribution is.
CURVE_PERCENTILES = ([float(p) for p in range(0, 90, 5)] + [90 + i * 0.5 for i in range(18)]
                     + [99 + i * 0.1 for i in range(9)] + [99.9 + i * 0.01 for i in range(9)] + [99.99, 100.0])


def percentile(ordered: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of an ascending sequence (p in 0..100)."""
    if not ordered:
        raise ValueError("no samples")
    rank = min(len(ordered), max(1, math.ceil(p * len(ordered) / 100)))
    return ordered[rank - 1]


def summarize_ns(samples: Sequence[int]) -> dict:
    """p50/p99/p99.9/max in milliseconds plus the percentile curve, from nanosecond samples."""
    ordered = sorted(samples)
    if not ordered:
        return {"samples": 0}
    return {"samples": len(ordered), "p50": _ms(percentile(ordered, 50)), "p99": _ms(percentile(ordered, 99)),
            "p99.9": _ms(percentile(ordered, 99.9)), "max": _ms(ordered[-1]),
            "curve": [[p, _ms(percentile(ordered, p))] for p in CURVE_PERCENTILES]}


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def spread(values: Sequence[float]) -> dict:
    """Median with min and max, for repeated runs."""
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
