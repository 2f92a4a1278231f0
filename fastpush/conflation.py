"""Conflation: a slow reader of a conflated group gets the latest value, not a backlog or a close.

A hub opts in by group pattern (config file `conflateGroups`, optional `maxMessagesPerSecond`).
A send to a matching group carries its group's `Conflation` (`Frames.conflate`). The fan-out
loop asks `offer` about it only for a connection that is paused (its socket backed up) or that
has conflation state already, or when the group is rate-limited: a healthy connection of an
unlimited group costs one comparison per member, and every other send none.

`offer` keeps the send as the one value waiting for its (connection, group), replacing the one
that waited, when the connection's own queue holds `max_outbound // LOW_WATER_DIVISOR` bytes or
more while its socket is backed up, or when the group's rate limit has not come round yet. What
waits was never numbered: a reliable client's sequenceId is given when it is written (`drain`),
so the client sees no gap and the replay buffer holds only what was written. An expired value
(messageTtlSeconds) is dropped, not written. At most one value waits per group the connection
is in, so a client that never reads costs at most its groups' latest messages here.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Conflation", "ConflationRules", "LOW_WATER_DIVISOR", "offer", "drain", "drop"]

# A backed-up connection conflates once its own queue holds max_outbound // 8 bytes (512 KiB of
# the default 4 MiB): a short stall still gets every message, a long one only the latest ones.
LOW_WATER_DIVISOR = 8
_RULE_CACHE = 4096  # groups whose rule a hub remembers (cleared when full: a lookup is cheap)


class Conflation:
    """One conflated group of a hub: its name, and the shortest time between two of its
    messages to one connection (0.0: no rate limit)."""

    __slots__ = ("group", "interval")

    def __init__(self, group: str, interval: float) -> None:
        self.group = group
        self.interval = interval


class ConflationRules:
    """A hub's `conflateGroups` patterns and rate, and the groups it has matched so far."""

    def __init__(self, matchers: tuple[Callable[[str], object], ...], max_per_second: float | None) -> None:
        self._matchers = matchers
        self._interval = 1.0 / max_per_second if max_per_second else 0.0
        self._rules: dict[str, Conflation | None] = {}

    def rule(self, group: str) -> Conflation | None:
        """The group's Conflation, or None when no pattern matches it."""
        try:
            return self._rules[group]
        except KeyError:
            pass
        if len(self._rules) >= _RULE_CACHE:
            self._rules.clear()
        found = None
        if any(match(group) for match in self._matchers):
            found = Conflation(group, self._interval)
        self._rules[group] = found
        return found


class _Sent(Protocol):
    """What waits: a send (fastpush.fanout.Frames), of which only the deadline is read here."""

    @property
    def deadline(self) -> float: ...


class _Conflating(Protocol):
    """What offer and drain read of a connection (fastpush.fanout.Connection, with the session's
    `flush_conflated`: what a rate-limit timer calls)."""

    conflation: object
    paused: bool
    max_outbound: int
    groups: set[str] | frozenset[str]

    @property
    def is_open(self) -> bool: ...
    @property
    def queued_bytes(self) -> int: ...


class _State:
    """One connection's conflation: the value waiting per group with its group's interval, when
    each rate-limited group may next be written, and the timer that writes it then."""

    __slots__ = ("draining", "latest", "next_at", "timer")

    def __init__(self) -> None:
        self.latest: dict[str, tuple[_Sent, float]] = {}
        self.next_at: dict[str, float] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.draining = False


def offer(conn: _Conflating, frames: _Sent, rule: Conflation) -> bool:
    """True: `frames` waits as its group's latest value for `conn` (not written now); False:
    write it as usual."""
    flush = getattr(conn, "flush_conflated", None)
    if flush is None or not conn.is_open:
        return False  # a connection away (a reliable one buffers for its recovery) or not a client's
    state = conn.conflation
    assert state is None or isinstance(state, _State)
    group = rule.group
    if state is not None:
        if state.draining:
            if rule.interval:
                state.next_at[group] = time.monotonic() + rule.interval
            return False
        if group in state.latest:
            state.latest[group] = (frames, rule.interval)
            return True
    slow = conn.paused and conn.queued_bytes >= conn.max_outbound // LOW_WATER_DIVISOR
    if rule.interval:
        now = time.monotonic()
        if state is None:
            state = conn.conflation = _State()
        due = state.next_at.get(group, 0.0)
        if not slow and due <= now:
            _trim_times(state, conn.groups, now)
            state.next_at[group] = now + rule.interval
            return False
        if not slow:
            _schedule(state, due, flush)
    elif not slow:
        return False
    if state is None:
        state = conn.conflation = _State()
    latest = state.latest
    if len(latest) >= len(conn.groups):  # groups it left while one waited: never more than it is in
        for stale in [g for g in latest if g not in conn.groups]:
            del latest[stale]
    latest[group] = (frames, rule.interval)
    return True


def drain(conn: _Conflating, write: Callable[[_Sent], object], everything: bool = False) -> None:
    """Write what waits for `conn` through `write` (the fan-out, which numbers it for a reliable
    client), oldest group first: what is due, while the socket takes it (`everything`: all of
    it, at once: the socket is gone and a reliable session buffers it for its recovery). An
    expired value is dropped. A value whose rate limit has not come round waits for its timer."""
    state = conn.conflation
    if not isinstance(state, _State):
        return
    if state.timer is not None:
        state.timer.cancel()
        state.timer = None
    now = time.monotonic()
    soonest = 0.0
    state.draining = True
    try:
        for group, (frames, interval) in list(state.latest.items()):
            if not everything and (conn.paused or not conn.is_open):
                break
            if frames.deadline and frames.deadline <= now:
                del state.latest[group]
                continue
            due = state.next_at.get(group, 0.0)
            if not everything and due > now:
                soonest = due if not soonest else min(soonest, due)
                continue
            del state.latest[group]
            write(frames)
            if interval and not everything:
                state.next_at[group] = now + interval
    finally:
        state.draining = False
    if not state.latest:
        _trim_times(state, conn.groups, now)
        if not state.next_at:
            conn.conflation = None
    elif soonest and not conn.paused:
        flush = getattr(conn, "flush_conflated", None)
        if flush is not None:
            _schedule(state, soonest, flush)


def drop(conn: _Conflating) -> None:
    """Forget what waits for `conn` (its session ended)."""
    state = conn.conflation
    if isinstance(state, _State) and state.timer is not None:
        state.timer.cancel()
    conn.conflation = None


def _schedule(state: _State, when: float, flush: Callable[[], object]) -> None:
    """One timer per connection, at the soonest time a waiting rate-limited value may be written."""
    timer = state.timer
    if timer is not None and timer.when() <= when:
        return
    if timer is not None:
        timer.cancel()
    loop = asyncio.get_running_loop()
    # time.monotonic() and the loop's clock are the same clock (asyncio's and uvloop's default)
    state.timer = loop.call_at(loop.time() + max(0.0, when - time.monotonic()), flush)


def _trim_times(state: _State, groups: set[str] | frozenset[str], now: float) -> None:
    """Keep the rate-limit times bounded: once they outnumber the groups, forget the ones past."""
    if len(state.next_at) > len(groups):
        for group in [g for g, at in state.next_at.items() if at <= now or g not in groups]:
            del state.next_at[group]
