"""The ticker workload: which symbols each client follows, which symbol each tick is for, and the tick's stamp.

Symbols are ranked by popularity with Zipf weights (rank r weighs 1 / r**exponent). Each client follows
K distinct symbols drawn by popularity, so the top symbols have nearly every client and the tail a few
dozen; ticks pick their symbol with Zipf weights of their own exponent (0: every symbol ticks as often).
Everything comes from one seeded generator, so the orchestrator and every load generator agree on it.

A tick's text is its stamp, `@<send ns:19>#<symbol:5>#<seq:9>`, padded to the payload size. Fixed width
keeps a server's frames the same length, which lets the subscriber read the usual frame without parsing
it (benches/ticker_client.py); the send time is CLOCK_MONOTONIC, the same clock in every process.
"""
from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MARK", "MAX_SYMBOLS", "MIN_BYTES", "STAMP_BYTES", "Workload", "followers", "group_name", "mean_fanout",
           "tick_text"]

MARK = b"@"
_STAMP = "@{:019d}#{:05d}#{:09d}"
STAMP_BYTES = 36  # len(_STAMP.format(0, 0, 0))
MIN_BYTES = STAMP_BYTES
MAX_SYMBOLS = 100_000  # five digits in the stamp and the group name
_GROUP = "tick.S{:05d}"  # matches the pattern "tick.*": one level below "tick"


def group_name(symbol: int) -> str:
    """The group (fastpush), channel (Centrifugo) or topic (Node ws) of a symbol; fixed width."""
    return _GROUP.format(symbol)


def tick_text(symbol: int, seq: int, size: int, now_ns: int | None = None) -> str:
    """A tick of exactly `size` ASCII bytes, stamped now (or at `now_ns`)."""
    head = _STAMP.format(time.monotonic_ns() if now_ns is None else now_ns, symbol, seq)
    return head + "x" * (size - STAMP_BYTES)


def _zipf(count: int, exponent: float) -> list[float]:
    return [1.0 / (rank ** exponent) for rank in range(1, count + 1)]


@dataclass(frozen=True)
class Workload:
    clients: int
    symbols: int
    per_client: int  # K: symbols each client follows
    zipf: float  # exponent of subscription popularity
    tick_zipf: float  # exponent of how often a symbol ticks; 0 = uniform
    seed: int = 12

    def subscriptions(self) -> list[tuple[int, ...]]:
        """Each client's K distinct symbols, drawn by popularity (redrawing repeats: the top symbols
        would otherwise be picked twice)."""
        weights = list(itertools.accumulate(_zipf(self.symbols, self.zipf)))
        population = range(self.symbols)
        rng = random.Random(self.seed)
        chosen = []
        for _ in range(self.clients):
            picked: set[int] = set()
            while len(picked) < self.per_client:
                picked.update(rng.choices(population, cum_weights=weights, k=self.per_client - len(picked)))
            chosen.append(tuple(sorted(picked)))
        return chosen

    def tick_shares(self) -> list[float]:
        """Probability that a tick is for each symbol."""
        weights = _zipf(self.symbols, self.tick_zipf)
        total = sum(weights)
        return [w / total for w in weights]

    def ticks(self, count: int, seed: int) -> list[int]:
        """`count` tick symbols drawn by tick share."""
        cumulative = list(itertools.accumulate(self.tick_shares()))
        return random.Random(seed).choices(range(self.symbols), cum_weights=cumulative, k=count)


def followers(subscriptions: Sequence[Sequence[int]], symbols: int) -> list[int]:
    """How many clients follow each symbol."""
    counts = [0] * symbols
    for chosen in subscriptions:
        for symbol in chosen:
            counts[symbol] += 1
    return counts


def mean_fanout(shares: Sequence[float], counts: Sequence[int]) -> float:
    """Deliveries per tick, on average over the tick mix."""
    return sum(share * count for share, count in zip(shares, counts, strict=True))
