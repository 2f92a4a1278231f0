"""The fan-out benchmark's subscriber (benches/subscriber.py) speaking Centrifugo's JSON protocol.

After the 101 it sends a connect command subscribing to the broadcast channel and is ready when the
reply comes. Centrifugo may put several pushes in one frame (one per line) and pings with `{}`, which
must be answered with `{}`; so every text frame is searched for all its stamps and ping lines, also
while counting, where the base class counts bytes (which only works when every message is a frame of
the same length). Counted messages are added to `received` as `frame_len` bytes each, which keeps the
fleet's `received // frame_len` count true.
"""
from __future__ import annotations

import time

from . import payload
from .centrifugo import connect_command
from .subscriber import READY, WELCOME, Subscriber
from .ws_frames import CENTRIFUGO_PONG, masked_frame

__all__ = ["BROADCAST_CHANNEL", "CentrifugoSubscriber"]

BROADCAST_CHANNEL = "broadcast"
_CONNECT = masked_frame(connect_command([BROADCAST_CHANNEL]).encode())
_PING_LINE = b"{}"


class CentrifugoSubscriber(Subscriber):
    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        if self.sink.counting and self.state == READY:
            if self.pending:
                data = self.pending + data
                self.pending = b""
            self._read_frames(data, time.monotonic_ns())
            return
        super().data_received(data)

    def _upgraded(self, head: bytes) -> None:
        self.state = WELCOME
        assert self.transport is not None
        self.transport.write(_CONNECT)

    def _welcomed(self, data: bytes, start: int, end: int) -> None:
        if data.find(b'"error"', start, end) >= 0:
            self._fail("connect refused: " + data[start:end].decode(errors="replace")[:200])
        else:
            super()._welcomed(data, start, end)

    def _read_stamp(self, data: bytes, pos: int, start: int, end: int, now: int) -> None:
        if data.find(_PING_LINE, start, end) >= 0:
            for line in data[start:end].split(b"\n"):
                if line == _PING_LINE:
                    assert self.transport is not None
                    self.transport.write(CENTRIFUGO_PONG)
        if self.sink.counting:
            self._count(data.count(payload.MARKER, start, end))
            return
        at = first = payload.find(data, start, end)
        count = 0
        while at >= 0:
            count += 1
            send_ns, seq = payload.stamp(data, at)
            self.sink.on_stamp(send_ns, seq, now)
            at = payload.find(data, at + payload.MIN_BYTES - 1, end)
        if count == 1:  # a frame of one push: the shape the fast path and the count expect
            self.frame_len, self.stamp_at = end - pos, first - pos

    def _count(self, messages: int) -> None:
        before = self.received
        self.received = before + messages * self.frame_len
        if before < self.target <= self.received:
            self.sink.on_counted(self)
