"""The pure-Python twin of `_fanout`: the same tables, framing and fan-out, written for reading.

It is the executable specification the compiled module is tested against (tests/fanout/), and
the server's fan-out when FASTPUSH_NO_EXTENSIONS=1 (see fastpush/fanout.py). Where `_fanout`
calls WSTransport._fast_write, this writes through the underlying asyncio transport; the bytes
are the same. Names with a leading underscore are what `_fanout` keeps at C level, out of
Python's reach.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import struct
import time
import weakref
from collections import deque
from collections.abc import Callable, Collection, Iterable

from picows import WSListener, WSTransport

from .conflation import Conflation, offer
from .protocol.json_protocol import GroupSource, ServerSource, message_tail
from .protocol.payload import Payload
from .protocol.protobuf_protocol import data_message_inner, encode_varint
from .protocol.variants import RELIABLE_VARIANTS, Variant

_log = logging.getLogger("fastpush.fanout")

__all__ = [
    "FANOUT_BUCKETS",
    "RELIABLE_VARIANTS",
    "Connection",
    "Frames",
    "Tables",
    "census",
    "fanout",
    "fanout_counts",
    "frame",
    "recipient_failures",
    "trim_transport",
]

_TEXT, _BINARY = 0x1, 0x2
_EMPTY: frozenset[str] = frozenset()
_PENDING_KEEP = 65536  # a pending buffer larger than this is released after its flush


class _Counts:
    """What the fan-out did, for the metrics collector (the compiled module keeps C integers)."""

    broadcasts = 0  # fanout() calls
    deliveries = 0  # members a fanout() wrote to (or queued for)
    sent_bytes = 0  # bytes handed to client sockets by this module
    direct_writes = 0  # writes of one frame (alone in its loop turn, a resend)
    coalesced_writes = 0  # writes of several frames (a turn's burst, a drained socket)
    coalesced_frames = 0  # frames that shared a turn's write with an earlier one
    dropped_bytes = 0  # queued bytes dropped when a slow client overflowed
    fanout_ns = 0


# How long each fanout() took: counts per bucket (not cumulative), the last past the largest bound.
FANOUT_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                  0.05, 0.1, 0.25)
_BOUNDS_NS = [round(bound * 1e9) for bound in FANOUT_BUCKETS]
_fanout_counts = [0] * (len(FANOUT_BUCKETS) + 1)


def fanout_counts() -> dict[str, object]:
    """The counters, as a dict (the collector turns them into metrics)."""
    return {"broadcasts": _Counts.broadcasts, "deliveries": _Counts.deliveries, "sent_bytes": _Counts.sent_bytes,
            "direct_writes": _Counts.direct_writes, "coalesced_writes": _Counts.coalesced_writes,
            "coalesced_frames": _Counts.coalesced_frames, "dropped_bytes": _Counts.dropped_bytes,
            "recipient_failures": _failures, "fanout_buckets": tuple(_fanout_counts),
            "fanout_seconds": _Counts.fanout_ns / 1e9}


def census(connections: Iterable[Connection]) -> tuple[tuple[int, ...], int, int, int]:
    """One hub's connections counted at scrape time: how many per wire variant, how many are
    reliable sessions waiting for their client (no socket), and the messages and bytes their
    replay buffers keep. Returns (per_variant, waiting, replay_messages, replay_bytes)."""
    per_variant = [0] * 5
    waiting = replay_messages = replay_bytes = 0
    for conn in connections:
        if 0 <= conn.variant < 5:
            per_variant[conn.variant] += 1
        if conn.transport is None or conn.transport.is_disconnected:
            waiting += 1
        if conn.replay is not None:
            replay_messages += len(conn.replay)
            replay_bytes += conn.replay_bytes
    return tuple(per_variant), waiting, replay_messages, replay_bytes


def _write_now(transport: WSTransport, data: bytes) -> None:
    """One frame straight to the socket (alone in its turn, a resend), counted."""
    transport.underlying_transport.write(data)
    _Counts.sent_bytes += len(data)
    _Counts.direct_writes += 1


def trim_transport(t: WSTransport) -> None:
    """The compiled module frees picows' upgrade request/response and most of its write buffer
    (fields Python cannot assign); nothing to do here."""


def frame(opcode: int, payload: bytes) -> bytes:
    """A complete server WebSocket frame around `payload`: unmasked, final."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return head + payload


class _Coalescer:
    """One loop's connections with frames waiting for the turn's end."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.dirty: list[Connection] = []
        self.handle: asyncio.Handle | None = None
        self.loop = loop

    def end_turn(self) -> None:
        self.handle = None
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn._flush_turn()


_coalescers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Coalescer] = weakref.WeakKeyDictionary()


def _coalescer_here() -> _Coalescer:
    loop = asyncio.get_running_loop()
    coalescer = _coalescers.get(loop)
    if coalescer is None:
        coalescer = _coalescers[loop] = _Coalescer(loop)
    return coalescer


def _deliver(conn: Connection, data: bytes, deadline: float = 0.0, sequence_id: int = 0) -> None:
    """Queue the frame for the end of this loop turn, when the connection's frames of the turn
    leave in one write; held instead while the socket is backed up (where its send's `deadline`
    and its `sequence_id`, for a reliable member, matter: see _hold)."""
    if conn.paused:
        _hold(conn, data, deadline, sequence_id)
        return
    if conn._queue is None:
        conn._queue = []
    if not conn._queue:
        if conn._coalescer is None:
            conn._coalescer = _coalescer_here()
        coalescer = conn._coalescer
        if coalescer.handle is None:
            coalescer.handle = coalescer.loop.call_soon(coalescer.end_turn)
        coalescer.dirty.append(conn)
    conn._queue.append(data)


# A frame in a paused connection's _pending that draining may drop or renumber: start, end,
# deadline, sequenceId (0: unnumbered), packed as the compiled module's C struct _Held.
_HELD = struct.Struct("nndQ")


def _hold(conn: Connection, data: bytes, deadline: float, sequence_id: int) -> None:
    """The socket is backed up: keep the frame until resume, up to max_outbound bytes. A frame
    that may expire is noted in `_held`, with (on a reliable connection) every numbered one after
    it, so that draining can drop it and number the later ones again; each note counts its 32
    bytes against max_outbound too."""
    if conn._pending is None:
        conn._pending = bytearray()
    used = len(conn._pending)
    noted = len(conn._held) if conn._held is not None else 0
    note = bool(deadline) or (bool(sequence_id) and conn._held is not None)
    if sequence_id and not conn._held_from:
        conn._held_from = sequence_id
    if used + len(data) + noted + (_HELD.size if note else 0) > conn.max_outbound:
        _Counts.dropped_bytes += used + len(data)
        conn._pending.clear()
        conn._held = None
        if conn.variant in RELIABLE_VARIANTS:
            # nothing from here on reaches this socket: the client recovers it, whatever expired skipped
            if not conn.unsent_from:
                conn.unsent_from = conn._held_from or sequence_id or conn.sequence_id + 1
            conn._held_from = 0
        conn.on_outbound_overflow()
        return
    conn._pending += data
    if note:
        if conn._held is None:
            conn._held = bytearray()
        conn._held += _HELD.pack(used, used + len(data), deadline, sequence_id)


def _open(transport: WSTransport | None) -> bool:
    return transport is not None and not transport.is_disconnected and not transport.is_close_frame_sent


class Connection(WSListener):
    """One client WebSocket: its identity, groups, roles and wire variant, and its transport."""

    __slots__ = (
        "_coalescer",
        "_held",
        "_held_from",
        "_pending",
        "_queue",
        "acked_sequence_id",
        "close_reason",
        "conflation",
        "connection_id",
        "groups",
        "hub",
        "keep_session",
        "last_seen",
        "max_outbound",
        "paused",
        "replay",
        "replay_bytes",
        "replay_max_bytes",
        "replay_max_messages",
        "replay_overflowed",
        "resend_next",
        "roles",
        "sequence_id",
        "subprotocol",
        "transport",
        "unsent_from",
        "user_id",
        "variant",
    )

    def __init__(self, connection_id: str, user_id: str | None, hub: str, subprotocol: str | None,
                 variant: int) -> None:
        self.connection_id = connection_id
        self.user_id = user_id
        self.hub = hub
        self.subprotocol = subprotocol
        self.variant = operator.index(variant)  # a plain int, as the compiled `int` field returns
        self.groups: set[str] | frozenset[str] = _EMPTY  # a set of its own from its first group
        self.roles: set[str] | frozenset[str] = _EMPTY
        self.sequence_id = 0
        self.transport: WSTransport | None = None
        self.replay: deque[Frames] | None = None  # from the first buffered message (reliable variants only)
        self.acked_sequence_id = 0
        self.replay_bytes = 0
        self.replay_overflowed = False
        self.replay_max_messages = 1000
        self.replay_max_bytes = 16 * 1024 * 1024
        self.resend_next = 0
        self.keep_session = False
        self.last_seen = 0.0
        self.close_reason: str | None = None
        self.paused = False
        self.max_outbound = 4 * 1024 * 1024
        # The first sequenceId that never reached a socket, once one was lost (0: none known):
        # below it an expired message may have reached the client, so it keeps its number and is
        # skipped; from it on an expired message is dropped and the later ones move up a number.
        self.unsent_from = 0
        # Frames waiting in _pending (paused) that draining may drop or renumber, as _HELD records:
        # those with a deadline and, on a reliable connection, every numbered one after the first
        # of those (None when none); and the first sequenceId waiting there.
        self._held: bytearray | None = None
        self._held_from = 0
        self._pending: bytearray | None = None
        self._queue: list[bytes] | None = None  # this loop turn's frames, written when it ends
        self._coalescer: _Coalescer | None = None
        self.conflation: object = None  # fastpush.conflation's state, while a value waits or a rate limit runs

    @property
    def protocol(self) -> str | None:
        return self.subprotocol

    @property
    def is_open(self) -> bool:
        return _open(self.transport)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in this connection's own queues (not yet handed to the socket's transport)."""
        queued = sum(len(data) for data in self._queue) if self._queue is not None else 0
        return queued + (len(self._pending) if self._pending is not None else 0)

    def acknowledge(self, sequence_id: int) -> None:
        """A cumulative sequenceAck: forget every buffered message up to `sequence_id`."""
        sequence_id = min(sequence_id, self.sequence_id)
        while self.acked_sequence_id < sequence_id and self.replay:
            self.replay_bytes -= self.replay.popleft().cost
            self.acked_sequence_id += 1

    def resend_unacknowledged(self, max_queued: int) -> bool:
        """After recovery: write the buffered messages again, in order, each with its sequenceId.

        Stops once the transport holds more than `max_queued` bytes and returns False; call it
        again when the transport drains. Returns True when all is resent. An expired message is
        not written: from `unsent_from` on it leaves the buffer, and the later ones move up a
        number; before it (it may have reached the client) it is skipped.
        """
        transport = self.transport
        now = 0.0
        if self.resend_next == 0:
            self.resend_next = self.acked_sequence_id + 1
            if not self.unsent_from:  # nothing known: every number may have reached the client
                self.unsent_from = self.sequence_id + 1
        while self.resend_next <= self.sequence_id:
            if transport is None or not _open(transport):
                return False
            if self.resend_next <= self.acked_sequence_id:
                self.resend_next = self.acked_sequence_id + 1
                continue
            assert self.replay is not None  # a sequenceId was given: its message was buffered
            index = self.resend_next - self.acked_sequence_id - 1
            frames = self.replay[index]
            if frames.deadline:
                now = now or time.monotonic()
                if frames.deadline <= now:
                    if self.resend_next >= self.unsent_from:
                        del self.replay[index]
                        self.replay_bytes -= frames.cost
                        self.sequence_id -= 1
                    else:
                        self.resend_next += 1
                    continue
            frames._write_sequenced(self, self.resend_next, direct=True)  # flow control sees it
            self.resend_next += 1
            if transport.underlying_transport.get_write_buffer_size() > max_queued:
                return False
        self.resend_next = 0
        self.unsent_from = 0
        return True

    def mark_unsent(self) -> None:
        """The socket is gone, or replaced by the client's new one: note from which sequenceId on
        nothing reached it (what a resend had not reached yet, what waited for a backed-up socket,
        or whatever comes next), for the resend to the next one."""
        if self.resend_next:
            self.unsent_from = self.resend_next
        elif not self.unsent_from:
            self.unsent_from = self._held_from or self.sequence_id + 1

    def on_replay_overflow(self) -> None:
        """Called once when the replay buffer passes its bounds; subclasses close the connection."""

    def on_outbound_overflow(self) -> None:
        """Called when more than max_outbound bytes wait for a paused socket (already dropped);
        subclasses close the connection."""

    def close(self, code: int, reason: str, notify: bool = False) -> None:
        """End the connection with a close frame (`notify`: tell the client why first, where its
        subprotocol can); how depends on the kind of client, so subclasses define it."""
        raise NotImplementedError

    def pause(self) -> None:
        """The socket's buffer passed its high-water mark: hold frames from now on, behind the
        ones this turn had queued (they move to _pending, so _queue is empty while paused)."""
        self.paused = True
        self._queue_to_pending()

    def resume(self) -> None:
        """The socket drained: write what was held, and queue frames for the turn's end again."""
        self.paused = False
        self._write_pending()

    def _write(self, data: bytes, deadline: float = 0.0) -> bool:
        if not _open(self.transport):
            return False
        _deliver(self, data, deadline)
        return True

    def _flush_turn(self) -> None:
        """The end of a loop turn: write what the turn queued, unless the socket is backed up."""
        if self.paused:
            self._queue_to_pending()
        else:
            self._write_queue()

    def _queue_to_pending(self) -> None:
        queue, self._queue = self._queue, None
        if queue:
            if self._pending is None:
                self._pending = bytearray()
            for data in queue:
                self._pending += data

    def _write_queue(self) -> None:
        """The turn's queued frames in one write (the compiled module: one writev())."""
        queue, self._queue = self._queue, None
        transport = self.transport
        if not queue or transport is None or not _open(transport):
            return
        # As the compiled module: a failed write at the turn's end is the socket's own news
        # (it is closing); the connections after it in this turn still get their bytes.
        with contextlib.suppress(Exception):
            if len(queue) == 1:
                _write_now(transport, queue[0])
                return
            data = b"".join(queue)
            _Counts.sent_bytes += len(data)
            _Counts.coalesced_writes += 1
            _Counts.coalesced_frames += len(queue) - 1
            transport.underlying_transport.write(data)

    def _write_pending(self) -> None:
        """Write what waits (resume, flush): what a backed-up socket held, then what this turn
        queued (nothing while paused: pause() moved it into _pending)."""
        self._write_held()
        self._write_queue()

    def _write_held(self) -> None:
        pending = self._pending
        if not pending:
            return
        if self.transport is not None and _open(self.transport):
            # As the compiled module: a failed write at the turn's end is the socket's own news
            # (it is closing); the connections after it in this turn still get their bytes.
            with contextlib.suppress(Exception):
                if self._held is not None:
                    pending = self._pending = self._drop_expired_held(pending)
                self._pending = None  # a pause_writing as we write starts a new one (pause())
                self.transport.underlying_transport.write(bytes(pending))
                _Counts.sent_bytes += len(pending)
                _Counts.coalesced_writes += 1
            self._held_from = 0
        elif self._held_from and not self.unsent_from:  # never written: a recovery resends them
            self.unsent_from = self._held_from
        self._held = None
        if self._pending is pending:
            self._pending = None
        if self._pending is None and len(pending) <= _PENDING_KEEP:
            pending.clear()
            self._pending = pending

    def _drop_expired_held(self, pending: bytearray) -> bytearray:
        """Before `pending` is written: cut out the held frames whose deadline has passed. On a
        reliable connection each leaves the replay buffer too and the numbered frames after it
        are framed again one number lower, so the client sees no gap: none of them was written."""
        held, self._held = list(_HELD.iter_unpack(self._held or b"")), None
        now = time.monotonic()
        if not any(deadline and deadline <= now for _, _, deadline, _ in held):
            return pending
        replay, acked = self.replay, self.acked_sequence_id
        renumber = not self.replay_overflowed and replay is not None
        out = bytearray()
        pos = removed = 0
        for start, end, deadline, seq in held:
            out += pending[pos:start]  # frames in between: nothing to drop or renumber
            pos = end
            # where it is in the replay buffer (a number acknowledged already, by a client that
            # acknowledged what it never got, has left it: that one cannot give its number away)
            index = seq - acked - removed - 1 if renumber and seq > acked else -1
            if deadline and deadline <= now:
                if index >= 0:
                    assert replay is not None
                    frames = replay[index]
                    del replay[index]
                    self.replay_bytes -= frames.cost
                    self.sequence_id -= 1
                    removed += 1
                continue
            if index >= 0 and removed:
                assert replay is not None
                out += replay[index]._sequenced(self.variant, seq - removed)
            else:
                out += pending[start:end]
        out += pending[pos:]
        return out

    def _purge_expired(self) -> None:
        """The replay buffer is full: drop the expired messages that no socket was ever given
        (from unsent_from, or where a resend stands), so a client that is away keeps room for
        what it can still be sent. The later ones move up a number."""
        if not self.unsent_from or self.replay is None:
            return
        skip = max(self.resend_next, self.unsent_from, self.acked_sequence_id + 1) - self.acked_sequence_id - 1
        if skip >= len(self.replay):
            return
        now = time.monotonic()
        kept: deque[Frames] = deque()
        for i, frames in enumerate(self.replay):
            if i >= skip and frames.deadline and frames.deadline <= now:
                self.replay_bytes -= frames.cost
                self.sequence_id -= 1
            else:
                kept.append(frames)
        self.replay = kept

    def send_frame(self, opcode: int, payload: bytes) -> bool:
        """A single message for this connection (ack, pong, system message), in order with its
        broadcasts; False if the connection is not open."""
        return self._write(frame(opcode, payload))

    def flush(self) -> None:
        """Write what waits now, held frames included (before a close frame, say)."""
        self._write_pending()

    def discard_pending(self) -> None:
        """A new socket (recovery) must not get bytes meant for the old one: they are resent."""
        self._queue = None
        if self._pending is not None:
            self._pending.clear()
        self._held = None
        if self._held_from and not self.unsent_from:
            self.unsent_from = self._held_from
        self._held_from = 0


class Frames:
    """One send; each wire variant's bytes are built the first time a member needs them."""

    __slots__ = ("_json", "_json_tail", "_pb", "_pb_inner", "_raw", "conflate", "cost", "deadline", "payload",
                 "source")

    def __init__(self, payload: Payload, source: ServerSource | GroupSource, deadline: float = 0.0) -> None:
        self.payload = payload
        self.source = source
        self.cost = len(payload.data) + 64  # what one buffered copy counts against a replay byte limit
        self.deadline = deadline  # time.monotonic() past which no connection may be sent it; 0.0: never
        self._raw: bytes | None = None
        self._json_tail: bytes | None = None
        self._json: bytes | None = None
        self._pb_inner: bytes | None = None
        self._pb: bytes | None = None
        self.conflate: Conflation | None = None  # a send to a conflated group: its rule (fastpush.conflation)

    def _raw_frame(self) -> bytes:
        if self._raw is None:
            self._raw = frame(_BINARY if self.payload.is_binary else _TEXT, self.payload.data)
        return self._raw

    def _json_message_tail(self) -> bytes:
        """The JSON envelope without its opening brace, so a sequenceId can be spliced in front."""
        if self._json_tail is None:
            self._json_tail = message_tail(self.source, self.payload)
        return self._json_tail

    def _json_frame(self) -> bytes:
        if self._json is None:
            self._json = frame(_TEXT, b"{" + self._json_message_tail())
        return self._json

    def _pb_data_fields(self) -> bytes:
        """The DataMessage's fields without sequence_id."""
        if self._pb_inner is None:
            self._pb_inner = data_message_inner(self.source, self.payload)
        return self._pb_inner

    def _pb_frame(self) -> bytes:
        if self._pb is None:
            inner = self._pb_data_fields()
            # DownstreamMessage.data_message (field 2, length-delimited)
            self._pb = frame(_BINARY, b"\x12" + encode_varint(len(inner)) + inner)
        return self._pb

    def _write_reliable(self, conn: Connection) -> bool:
        """Number, buffer until acknowledged, and write (unless the connection is away or resending)."""
        if conn.replay_overflowed:
            return False
        conn.sequence_id += 1
        if conn.replay is None:
            conn.replay = deque()
        conn.replay.append(self)
        conn.replay_bytes += self.cost
        if len(conn.replay) > conn.replay_max_messages or conn.replay_bytes > conn.replay_max_bytes:
            conn._purge_expired()
            if not conn.replay or conn.replay[-1] is not self:
                return False  # expired itself
            if len(conn.replay) > conn.replay_max_messages or conn.replay_bytes > conn.replay_max_bytes:
                conn.replay_overflowed = True
                conn.on_replay_overflow()
                return False
        if conn.resend_next:
            return False
        return self._write_sequenced(conn, conn.sequence_id)

    def _write_sequenced(self, conn: Connection, sequence_id: int, direct: bool = False) -> bool:
        transport = conn.transport
        if transport is None or not _open(transport):
            return False
        data = self._sequenced(conn.variant, sequence_id)
        if direct:
            conn._write_queue()  # what this turn queued before (a system message, say) goes first
            _write_now(transport, data)
        else:
            _deliver(conn, data, self.deadline, sequence_id)
        return True

    def _sequenced(self, variant: int, sequence_id: int) -> bytes:
        """This message's whole frame for one reliable member."""
        if variant == Variant.JSON_RELIABLE:
            return frame(_TEXT, b'{"sequenceId":%d,' % sequence_id + self._json_message_tail())
        body = self._pb_data_fields() + b"\x20" + encode_varint(sequence_id)  # + sequence_id (field 4, varint)
        return frame(_BINARY, b"\x12" + encode_varint(len(body)) + body)


def fanout(targets: Iterable[Connection], frames: Frames, excluded: frozenset[str] | None = None,
           predicate: Callable[[Connection], bool] | None = None) -> int:
    """Write `frames` to every open connection of `targets` not in `excluded` and passing `predicate`.

    Returns the number of connections written to (reliable connections that are away count
    only when their client recovers). An exception for one recipient (its filter, its transport,
    its overflow handler) is contained: counted, logged, and the loop goes on with the next one.
    Each call is counted and timed for the metrics (fanout_counts).
    """
    started = time.perf_counter_ns()
    delivered = 0
    conflate = frames.conflate
    rated = conflate is not None and conflate.interval > 0.0
    for conn in tuple(targets):
        try:
            if excluded is not None and conn.connection_id in excluded:
                continue
            if predicate is not None and not predicate(conn):
                continue
            if (conflate is not None and (conn.paused or rated or conn.conflation is not None)
                    and offer(conn, frames, conflate)):
                continue  # it waits as its group's latest value (fastpush.conflation)
            variant = conn.variant
            if variant == Variant.RAW:
                delivered += conn._write(frames._raw_frame(), frames.deadline)
            elif variant == Variant.JSON:
                delivered += conn._write(frames._json_frame(), frames.deadline)
            elif variant == Variant.PROTOBUF:
                delivered += conn._write(frames._pb_frame(), frames.deadline)
            else:
                delivered += frames._write_reliable(conn)
        except Exception as exc:
            _recipient_failed(conn, exc)
    _Counts.broadcasts += 1
    _Counts.deliveries += delivered
    _observe_fanout(time.perf_counter_ns() - started)
    return delivered


def _observe_fanout(ns: int) -> None:
    bucket = 0
    while bucket < len(_BOUNDS_NS) and ns > _BOUNDS_NS[bucket]:
        bucket += 1
    _fanout_counts[bucket] += 1
    _Counts.fanout_ns += ns


_failures = 0
_failure_logged_at = -1e9


def recipient_failures() -> int:
    """How many times one recipient's failure was contained by the fan-out loop (since start)."""
    return _failures


def _recipient_failed(conn: Connection, exc: Exception) -> None:
    """Count every failure; log at most one a second (with its traceback: it is our bug)."""
    global _failures, _failure_logged_at
    _failures += 1
    now = time.monotonic()
    if now - _failure_logged_at >= 1.0:
        _failure_logged_at = now
        _log.error("fan-out to connection %s failed (%d failures so far); the others still get the message",
                   getattr(conn, "connection_id", "?"), _failures, exc_info=exc)


class Tables:
    """Who is connected to one hub: connections by id, group members, connections per user."""

    __slots__ = ("connections", "groups", "users")

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.groups: dict[str, set[Connection]] = {}
        self.users: dict[str, set[Connection]] = {}

    def add(self, conn: Connection) -> None:
        self.connections[conn.connection_id] = conn
        if conn.user_id is not None:
            self.users.setdefault(conn.user_id, set()).add(conn)

    def remove(self, conn: Connection) -> bool:
        """Forget `conn` everywhere; returns False if it was not registered."""
        if self.connections.pop(conn.connection_id, None) is None:
            return False
        for group in conn.groups:
            _discard(self.groups, group, conn)
        conn.groups = _EMPTY
        if conn.user_id is not None:
            _discard(self.users, conn.user_id, conn)
        return True

    def join(self, conn: Connection, group: str) -> bool:
        """Add `conn` to `group`; returns False if it already was a member."""
        if group in conn.groups:
            return False
        groups = conn.groups
        if type(groups) is not set:  # the shared empty frozenset: most connections never get a set
            groups = conn.groups = set()
        groups.add(group)
        self.groups.setdefault(group, set()).add(conn)
        return True

    def leave(self, conn: Connection, group: str) -> bool:
        groups = conn.groups
        if group not in groups:
            return False
        assert isinstance(groups, set)  # it holds a group: it is the connection's own set
        groups.discard(group)
        _discard(self.groups, group, conn)
        return True

    def group_members(self, group: str) -> Collection[Connection]:
        return self.groups.get(group, ())

    def user_connections(self, user_id: str) -> Collection[Connection]:
        return self.users.get(user_id, ())


def _discard(table: dict[str, set[Connection]], key: str, conn: Connection) -> None:
    members = table.get(key)
    if members is not None:
        members.discard(conn)
        if not members:
            del table[key]
