"""The pure-Python twin of `_fanout`: the same tables, framing and fan-out, written for reading.
It is the executable specification the compiled module is tested against (tests/fanout/), never
the server's default path. Where `_fanout` calls WSTransport._fast_write, this writes through
the underlying asyncio transport; the bytes are the same."""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque

from picows import WSListener

from .protocol.json_protocol import message_tail
from .protocol.protobuf_protocol import data_message_inner, encode_varint
from .protocol.variants import RELIABLE_VARIANTS, Variant

_log = logging.getLogger("fastpush.fanout")

__all__ = ["Connection", "Frames", "Tables", "fanout", "recipient_failures", "frame", "trim_transport",
           "RELIABLE_VARIANTS"]

_TEXT, _BINARY = 0x1, 0x2
_EMPTY: frozenset = frozenset()
_PENDING_KEEP = 65536


def trim_transport(transport) -> None:
    """The compiled module frees picows' upgrade request/response and write buffer; nothing to do here."""


def frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked, final server frame."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return head + payload


class _Coalescer:
    """One loop's turn counter and the connections with bytes waiting for the turn's end."""

    def __init__(self, loop):
        self.turn = 1
        self.dirty: list[Connection] = []
        self.handle = None
        self.loop = loop

    def end_turn(self) -> None:
        self.handle = None
        self.turn += 1
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.end_turn_flush()


_coalescers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _deliver(conn: "Connection", data: bytes) -> None:
    """First frame of a turn: written now; later ones: written together when the turn ends;
    all of them held while the socket is backed up."""
    if conn.paused:
        _hold(conn, data)
        return
    if conn.coalescer is None:
        loop = asyncio.get_running_loop()
        conn.coalescer = _coalescers.get(loop) or _coalescers.setdefault(loop, _Coalescer(loop))
    coalescer = conn.coalescer
    if conn.written_turn != coalescer.turn:
        conn.written_turn = coalescer.turn
        if coalescer.handle is None:
            coalescer.handle = coalescer.loop.call_soon(coalescer.end_turn)
        conn.transport.underlying_transport.write(data)
        return
    if conn.pending is None:
        conn.pending = bytearray()
    if not conn.pending:
        coalescer.dirty.append(conn)
    conn.pending += data


def _hold(conn: "Connection", data: bytes) -> None:
    if conn.pending is None:
        conn.pending = bytearray()
    if len(conn.pending) + len(data) > conn.max_outbound:
        conn.pending.clear()
        conn.on_outbound_overflow()
        return
    conn.pending += data


def _open(transport) -> bool:
    return transport is not None and not transport.is_disconnected and not transport.is_close_frame_sent


class Connection(WSListener):
    __slots__ = ("connection_id", "user_id", "hub", "subprotocol", "variant", "groups", "roles", "sequence_id",
                 "transport", "replay", "acked_sequence_id", "replay_bytes", "replay_overflowed", "replay_max_messages", "replay_max_bytes", "resend_next",
                 "keep_session", "last_seen", "close_reason", "pending", "written_turn", "coalescer", "paused",
                 "max_outbound")

    def __init__(self, connection_id: str, user_id, hub: str, subprotocol, variant: int):
        self.connection_id = connection_id
        self.user_id = user_id
        self.hub = hub
        self.subprotocol = subprotocol
        self.variant = variant
        self.groups = _EMPTY
        self.roles = _EMPTY
        self.sequence_id = 0
        self.transport = None
        self.replay = None
        self.acked_sequence_id = 0
        self.replay_bytes = 0
        self.replay_overflowed = False
        self.replay_max_messages = 1000
        self.replay_max_bytes = 16 * 1024 * 1024
        self.resend_next = 0
        self.keep_session = False
        self.last_seen = 0.0
        self.close_reason = None
        self.pending = None
        self.written_turn = 0
        self.coalescer = None
        self.paused = False
        self.max_outbound = 4 * 1024 * 1024

    @property
    def protocol(self):
        return self.subprotocol

    @property
    def is_open(self) -> bool:
        return _open(self.transport)

    def acknowledge(self, sequence_id: int) -> None:
        sequence_id = min(sequence_id, self.sequence_id)
        while self.acked_sequence_id < sequence_id and self.replay:
            self.replay_bytes -= self.replay.popleft().cost
            self.acked_sequence_id += 1

    def resend_unacknowledged(self, max_queued: int) -> bool:
        if self.resend_next == 0:
            self.resend_next = self.acked_sequence_id + 1
        while self.resend_next <= self.sequence_id:
            if not _open(self.transport):
                return False
            if self.resend_next <= self.acked_sequence_id:
                self.resend_next = self.acked_sequence_id + 1
                continue
            frames = self.replay[self.resend_next - self.acked_sequence_id - 1]
            frames.write_sequenced(self, self.resend_next, direct=True)
            self.resend_next += 1
            if self.transport.underlying_transport.get_write_buffer_size() > max_queued:
                return False
        self.resend_next = 0
        return True

    def on_replay_overflow(self) -> None:
        """Subclasses close the connection."""

    def on_outbound_overflow(self) -> None:
        """Subclasses close the connection."""

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.flush()

    def end_turn_flush(self) -> None:
        if not self.paused:
            self.flush()

    def write(self, data: bytes) -> bool:
        if not _open(self.transport):
            return False
        _deliver(self, data)
        return True

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        if _open(self.transport):
            self.transport.underlying_transport.write(bytes(pending))
        if len(pending) > _PENDING_KEEP:
            self.pending = None
        else:
            pending.clear()

    def send_frame(self, opcode: int, payload: bytes) -> bool:
        return self.write(frame(opcode, payload))

    def discard_pending(self) -> None:
        if self.pending is not None:
            self.pending.clear()


class Frames:
    """One send; each wire variant's bytes are built the first time a member needs them."""

    def __init__(self, payload, source):
        self.payload = payload
        self.source = source
        self.cost = len(payload.data) + 64
        self._raw = self._json_tail = self._json = self._pb_inner = self._pb = None

    def raw_frame(self) -> bytes:
        if self._raw is None:
            self._raw = frame(_BINARY if self.payload.is_binary else _TEXT, self.payload.data)
        return self._raw

    def json_tail(self) -> bytes:
        if self._json_tail is None:
            self._json_tail = message_tail(self.source, self.payload)
        return self._json_tail

    def json_frame(self) -> bytes:
        if self._json is None:
            self._json = frame(_TEXT, b"{" + self.json_tail())
        return self._json

    def pb_inner(self) -> bytes:
        if self._pb_inner is None:
            self._pb_inner = data_message_inner(self.source, self.payload)
        return self._pb_inner

    def pb_frame(self) -> bytes:
        if self._pb is None:
            inner = self.pb_inner()
            self._pb = frame(_BINARY, b"\x12" + encode_varint(len(inner)) + inner)
        return self._pb

    def write_reliable(self, conn: Connection) -> bool:
        if conn.replay_overflowed:
            return False
        conn.sequence_id += 1
        if conn.replay is None:
            conn.replay = deque()
        conn.replay.append(self)
        conn.replay_bytes += self.cost
        if len(conn.replay) > conn.replay_max_messages or conn.replay_bytes > conn.replay_max_bytes:
            conn.replay_overflowed = True
            conn.on_replay_overflow()
            return False
        if conn.resend_next:
            return False
        return self.write_sequenced(conn, conn.sequence_id)

    def write_sequenced(self, conn: Connection, sequence_id: int, direct: bool = False) -> bool:
        if not _open(conn.transport):
            return False
        if conn.variant == Variant.JSON_RELIABLE:
            data = frame(_TEXT, b'{"sequenceId":%d,' % sequence_id + self.json_tail())
        else:
            body = self.pb_inner() + b"\x20" + encode_varint(sequence_id)
            data = frame(_BINARY, b"\x12" + encode_varint(len(body)) + body)
        if direct:
            conn.transport.underlying_transport.write(data)
        else:
            _deliver(conn, data)
        return True


def fanout(targets, frames: Frames, excluded=None, predicate=None) -> int:
    delivered = 0
    for conn in tuple(targets):
        try:
            if excluded is not None and conn.connection_id in excluded:
                continue
            if predicate is not None and not predicate(conn):
                continue
            variant = conn.variant
            if variant == Variant.RAW:
                delivered += conn.write(frames.raw_frame())
            elif variant == Variant.JSON:
                delivered += conn.write(frames.json_frame())
            elif variant == Variant.PROTOBUF:
                delivered += conn.write(frames.pb_frame())
            else:
                delivered += frames.write_reliable(conn)
        except Exception as exc:
            _recipient_failed(conn, exc)
    return delivered


_failures = 0
_failure_logged_at = -1e9


def recipient_failures() -> int:
    return _failures


def _recipient_failed(conn: Connection, exc: Exception) -> None:
    global _failures, _failure_logged_at
    _failures += 1
    now = time.monotonic()
    if now - _failure_logged_at >= 1.0:
        _failure_logged_at = now
        _log.error("fan-out to connection %s failed (%d failures so far); the others still get the message",
                   getattr(conn, "connection_id", "?"), _failures, exc_info=exc)


class Tables:
    def __init__(self):
        self.connections: dict[str, Connection] = {}
        self.groups: dict[str, set[Connection]] = {}
        self.users: dict[str, set[Connection]] = {}

    def add(self, conn: Connection) -> None:
        self.connections[conn.connection_id] = conn
        if conn.user_id is not None:
            self.users.setdefault(conn.user_id, set()).add(conn)

    def remove(self, conn: Connection) -> bool:
        if self.connections.pop(conn.connection_id, None) is None:
            return False
        for group in conn.groups:
            self._discard(self.groups, group, conn)
        conn.groups = _EMPTY
        if conn.user_id is not None:
            self._discard(self.users, conn.user_id, conn)
        return True

    def join(self, conn: Connection, group: str) -> bool:
        if group in conn.groups:
            return False
        if type(conn.groups) is not set:
            conn.groups = set()
        conn.groups.add(group)
        self.groups.setdefault(group, set()).add(conn)
        return True

    def leave(self, conn: Connection, group: str) -> bool:
        if group not in conn.groups:
            return False
        conn.groups.discard(group)
        self._discard(self.groups, group, conn)
        return True

    def group_members(self, group: str):
        return self.groups.get(group, ())

    def user_connections(self, user_id: str):
        return self.users.get(user_id, ())

    @staticmethod
    def _discard(table: dict, key: str, conn: Connection) -> None:
        members = table.get(key)
        if members is not None:
            members.discard(conn)
            if not members:
                del table[key]
