"""A ticker subscriber: reads every tick's stamp, and can be told to read slowly.

Cheap on the usual path, because the load generator must keep up with the server: when one read holds
exactly one frame shaped like the last single-tick frame (same length, same header), the stamp is read
at its known offset without walking the frame. Otherwise every text frame is searched for stamps
(Centrifugo may put several pushes in one frame, one per line).

A slow subscriber reads at most `rate` bytes per second, smoothly: each read takes at most a tenth of a
second's worth (the buffer it offers is that small), then it stops reading until those bytes are
within its rate. Meanwhile the kernel's buffers fill, then the server's queue. Its socket's receive
buffer is fixed when it connects (SLOW_RCVBUF), so that reading fast in the earlier phases does not let
the kernel grow it and hide the backlog from the server.
"""
from __future__ import annotations

import asyncio
import time
from array import array
from typing import Protocol

from .ticker_workload import MARK, STAMP_BYTES
from .ws_client import SHARED_VIEW, WsClient

__all__ = ["Book", "Fleet", "TickerSubscriber"]

SLICE_SECONDS = 0.1  # a slow reader reads at most this much of its rate at once
MIN_READ = 64
SLOW_RCVBUF = 64 * 1024  # SO_RCVBUF of slow subscribers (Linux doubles it for its bookkeeping)
_MARK = MARK[0]


class Book:
    """What one class of subscribers (healthy or slow) received since the last reset: deliveries, and
    one latency sample (ns) every `every` deliveries (0: none)."""

    __slots__ = ("countdown", "delivered", "every", "samples")

    def __init__(self) -> None:
        self.delivered = 0
        self.every = 0
        self.countdown = 0
        self.samples = array("q")

    def reset(self, every: int) -> None:
        self.delivered = 0
        self.every = self.countdown = every
        self.samples = array("q")


class Fleet(Protocol):
    """The load generator's side: where subscribers record and report."""

    healthy: Book
    slow: Book
    delivered: int
    target: int

    def on_ready(self, sub: TickerSubscriber) -> None: ...
    def on_failed(self, sub: TickerSubscriber, reason: str) -> None: ...
    def on_lost(self, sub: TickerSubscriber) -> None: ...
    def on_target(self) -> None: ...


class TickerSubscriber(WsClient):
    """One subscriber. `share` is how many of its deliveries one tick makes on average (the tick shares
    of the symbols it follows): with the tick rate, how fast it is sent to."""

    def __init__(self, fleet: Fleet, request: bytes, dialect: str, hello: bytes | None, slow: bool, share: float):
        super().__init__(request, dialect, hello)
        self.fleet = fleet
        self.slow = slow
        self.book = fleet.slow if slow else fleet.healthy
        self.share = share
        self.head = b"\0"  # header of the last single-tick frame, its length and where its stamp was
        self.frame_len = 0
        self.stamp_at = 0
        self.bytes_read = 0
        self.ticks_read = 0
        self.rate = 0.0  # bytes per second while reading slowly, else 0
        self.view = SHARED_VIEW
        self.due = 0.0  # loop time by which what was read so far may have been read at `rate`
        self.paused = False

    # --- reading ----------------------------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def data_received(self, data: bytes | bytearray) -> None:
        self.bytes_read += len(data)
        if self.rate:
            self._pause_for(len(data))
        at = self.stamp_at
        if len(data) == self.frame_len and not self.pending and data.startswith(self.head) and data[at] == _MARK:
            self._ticks(data, at, at + 1, time.monotonic_ns())
            return
        super().data_received(data)

    def on_text(self, data: bytes | bytearray, start: int, end: int, now: int) -> None:
        count = self._ticks(data, start, end, now)
        length = end - start
        header = 2 if length < 126 else 4 if length < 65536 else 10
        if count == 1 and length + header != self.frame_len:  # a new shape of single-tick frame
            self.head = data[start - header:start]
            self.frame_len, self.stamp_at = length + header, data.find(MARK, start, end) - start + header

    def _ticks(self, data: bytes | bytearray, start: int, end: int, now: int) -> int:
        """Count the stamps in data[start:end], keeping a latency sample every `book.every` ticks (the
        only ones whose send time is parsed); how many there were."""
        book = self.book
        if book.every:
            count = 0
            at = data.find(MARK, start, end)
            while at >= 0:
                count += 1
                book.countdown -= 1
                if not book.countdown:
                    book.countdown = book.every
                    book.samples.append(now - int(data[at + 1:at + 20]))
                at = data.find(MARK, at + STAMP_BYTES, end)
        else:
            count = data.count(MARK, start, end)
        self.ticks_read += count
        book.delivered += count
        fleet = self.fleet
        before = fleet.delivered
        fleet.delivered = before + count
        if before < fleet.target <= before + count:
            fleet.on_target()
        return count

    # --- reading slowly ---------------------------------------------------------------------
    def read_slowly(self, rate: float) -> None:
        """Read at most `rate` bytes per second from now on (0: as fast as possible again)."""
        self.rate = rate
        self.view = SHARED_VIEW[:max(MIN_READ, int(rate * SLICE_SECONDS))] if rate else SHARED_VIEW
        self.due = asyncio.get_running_loop().time()
        if not rate:
            self._resume()

    def bytes_per_tick(self) -> float | None:
        return self.bytes_read / self.ticks_read if self.ticks_read else None

    def _pause_for(self, size: int) -> None:
        """Stop reading until the bytes read so far are within the slow rate. The schedule is kept on the
        clock, so a late wake-up (a busy load generator) shortens the next pause instead of lowering the
        rate; up to a slice of lateness is made up."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.due = max(self.due, now - SLICE_SECONDS) + size / self.rate
        if self.due > now and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
            loop.call_at(self.due, self._resume)

    def _resume(self) -> None:
        if self.paused:
            self.paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    # --- life -------------------------------------------------------------------------------
    def on_ready(self) -> None:
        self.fleet.on_ready(self)

    def on_failed(self, reason: str) -> None:
        self.fleet.on_failed(self, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fleet.on_lost(self)
