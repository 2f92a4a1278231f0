"""When a message with a time to live expires, on which clock.

A send carries its expiry between nodes as an absolute wall-clock time (`expires_at`, Unix seconds,
0.0 for never): every node reads the same instant from it, however long the message took to arrive.
Each node turns it into a deadline on its own monotonic clock once, where the operation is applied
(`local_deadline`), so what the fan-out and the queues compare afterwards is a float against
time.monotonic(), immune to the wall clock being stepped. The wall clock is read only where a
message crosses between nodes: nodes whose clocks differ by d expire each other's messages up to d
early or late (NTP keeps d to milliseconds), and a deadline more than the longest TTL away is
clamped to it, so a node whose clock runs behind never keeps a message longer than 300 s.
"""
from __future__ import annotations

import time

from .protocol.ttl import MAX_TTL_SECONDS

__all__ = ["NEVER", "expires_at", "local_deadline", "wall_time"]

NEVER = 0.0  # both as `expires_at` and as a deadline: the message does not expire


def expires_at(ttl_seconds: int) -> float:
    """The wall-clock time a message sent now with this TTL expires (NEVER for 0)."""
    return time.time() + ttl_seconds if ttl_seconds else NEVER


def local_deadline(expires_at: float) -> float | None:
    """The time.monotonic() deadline of a message expiring at `expires_at` (NEVER for NEVER), or
    None if it has already expired."""
    if expires_at == NEVER:
        return NEVER
    remaining = expires_at - time.time()
    if remaining <= 0:
        return None
    return time.monotonic() + min(remaining, MAX_TTL_SECONDS)


def wall_time(deadline: float) -> float:
    """A monotonic deadline back on the wall clock, for a message moving to another node (a
    reliable session handed over with its buffer); NEVER stays NEVER."""
    if deadline == NEVER:
        return NEVER
    return time.time() + (deadline - time.monotonic())
