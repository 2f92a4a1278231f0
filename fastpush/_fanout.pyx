# cython: language_level=3
"""Connection, group and user tables and the fan-out loop: the compiled hot path."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject
from cpython.bytearray cimport PyByteArray_AS_STRING
from libc.string cimport memcpy
from libc.stdio cimport snprintf
from cpython.bytearray cimport PyByteArray_GET_SIZE, PyByteArray_Resize
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.uio cimport iovec, writev

import asyncio
import logging
import time
import weakref
from collections import deque

from .conflation import offer as _conflation_offer
from .protocol.json_protocol import message_tail
from .protocol.protobuf_protocol import data_message_inner
from .protocol.variants import RELIABLE_VARIANTS
from picows.picows cimport MemoryBuffer, WSListener, WSTransport

__all__ = ["Connection", "Frames", "Tables", "fanout", "recipient_failures", "frame", "trim_transport",
           "RELIABLE_VARIANTS", "FANOUT_BUCKETS", "fanout_counts", "census"]

cdef object _EMPTY = frozenset()
_log = logging.getLogger("fastpush.fanout")
DEF _PENDING_KEEP = 65536  # a pending buffer larger than this is released after its flush
DEF _PENDING_FIRST = 1024  # the smallest allocation a paused socket's held frames get
DEF _IOV_CHUNK = 256  # frames one writev() takes (under Linux's IOV_MAX of 1024)


cdef extern from "Python.h":
    # CPython's bytearray, public in its C API headers: bytes allocated from ob_bytes, where the
    # contents start (a deletion at the front moves it)
    ctypedef struct PyByteArrayObject:
        Py_ssize_t ob_alloc
        char* ob_bytes
        char* ob_start
    void Py_SET_SIZE(object o, Py_ssize_t size)

# What the fan-out did, for the metrics collector (fastpush/metrics), which reads them when scraped:
# plain C integers, so the hot path pays an addition, never a Python call. One set per process.
cdef unsigned long long _broadcasts = 0        # fanout() calls
cdef unsigned long long _deliveries = 0        # members a fanout() wrote to (or queued for)
cdef unsigned long long _sent_bytes = 0        # bytes handed to client sockets by this module
cdef unsigned long long _direct_writes = 0     # writes of one frame (alone in its loop turn, a resend)
cdef unsigned long long _coalesced_writes = 0  # writes of several frames (a turn's burst, a drained socket)
cdef unsigned long long _coalesced_frames = 0  # frames that shared a turn's write with an earlier one
cdef unsigned long long _dropped_bytes = 0     # queued bytes dropped when a slow client overflowed
cdef unsigned long long _recipient_failures = 0  # members whose failure fanout() contained
# How long each fanout() took, as a histogram: counts per bucket (not cumulative), the last one
# past the largest bound; bounds in seconds, compared in nanoseconds.
FANOUT_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                  0.05, 0.1, 0.25)
DEF _NBOUNDS = 14
cdef long long _bound_ns[_NBOUNDS]
cdef unsigned long long _fanout_counts[_NBOUNDS + 1]
cdef long long _fanout_ns = 0


cdef void _init_buckets():
    cdef int i
    for i in range(_NBOUNDS):
        _bound_ns[i] = <long long>round(FANOUT_BUCKETS[i] * 1e9)
    for i in range(_NBOUNDS + 1):
        _fanout_counts[i] = 0


_init_buckets()


cdef inline long long _now_ns() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline void _observe_fanout(long long ns) noexcept:
    global _fanout_ns
    cdef int i = 0
    while i < _NBOUNDS and ns > _bound_ns[i]:
        i += 1
    _fanout_counts[i] += 1
    _fanout_ns += ns


def fanout_counts():
    """The counters above, as a dict (the collector turns them into metrics)."""
    return {"broadcasts": _broadcasts, "deliveries": _deliveries, "sent_bytes": _sent_bytes,
            "direct_writes": _direct_writes, "coalesced_writes": _coalesced_writes,
            "coalesced_frames": _coalesced_frames, "dropped_bytes": _dropped_bytes,
            "recipient_failures": _recipient_failures,
            "fanout_buckets": tuple(_fanout_counts[i] for i in range(_NBOUNDS + 1)),
            "fanout_seconds": _fanout_ns / 1e9}


def census(object connections):
    """One hub's connections counted at scrape time, in one pass in C: how many per wire variant,
    how many are reliable sessions waiting for their client (no socket), and the messages and
    bytes their replay buffers keep. Returns (per_variant, waiting, replay_messages, replay_bytes)."""
    cdef Connection conn
    cdef Py_ssize_t per_variant[5]
    cdef Py_ssize_t waiting = 0, replay_messages = 0, replay_bytes = 0
    cdef WSTransport t
    cdef int i
    for i in range(5):
        per_variant[i] = 0
    for conn in connections:
        if 0 <= conn.variant < 5:
            per_variant[conn.variant] += 1
        t = conn.transport
        if t is None or t.is_disconnected:
            waiting += 1
        if conn.replay is not None:
            replay_messages += len(conn.replay)
            replay_bytes += conn.replay_bytes
    return tuple(per_variant[i] for i in range(5)), waiting, replay_messages, replay_bytes


cdef class _Coalescer:
    """One event loop's write coalescing: the connections holding frames to write when the turn
    ends (one per loop: servers in several threads stay apart)."""
    cdef list dirty
    cdef object handle
    cdef object loop

    def __init__(self, loop):
        self.dirty = []
        self.handle = None
        self.loop = loop

    def end_turn(self):
        cdef Connection conn
        self.handle = None
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn._flush()


_coalescers = weakref.WeakKeyDictionary()


cdef _Coalescer _coalescer_here():
    loop = asyncio.get_running_loop()
    coalescer = _coalescers.get(loop)
    if coalescer is None:
        coalescer = _coalescers[loop] = _Coalescer(loop)
    return coalescer


cdef inline int _deliver(Connection conn, bytes data, double deadline, unsigned long long sequence_id) except -1:
    """Queue a frame for the end of this loop turn, when each connection's frames of the turn
    leave in one writev() (_write_queue): the queue holds references to the frames, shared by
    every member of a broadcast, so nothing is copied per member before the kernel copies it.
    Its send's `deadline` (0.0: none) and its `sequence_id` (0: unnumbered) matter only if the
    socket is backed up: see _hold."""
    cdef _Coalescer coalescer
    cdef list queue
    if conn.paused:
        return _hold(conn, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), deadline, sequence_id)
    queue = conn.queue
    if queue is None:
        queue = conn.queue = []
    if PyList_GET_SIZE(queue) == 0:
        coalescer = conn.coalescer
        if coalescer is None:
            coalescer = conn.coalescer = _coalescer_here()
        if coalescer.handle is None:
            coalescer.handle = coalescer.loop.call_soon(coalescer.end_turn)
        coalescer.dirty.append(conn)
    queue.append(data)
    return 0


cdef inline char* _append_room(bytearray pending, Py_ssize_t used, Py_ssize_t size) except NULL:
    """Lengthen `pending` (private to its connection, never exported) by `size` bytes and return
    where they go. Its allocation doubles when full and is otherwise kept: a backed-up socket's
    frames arrive one after another, and PyByteArray_Resize both grows by an eighth and shrinks an
    allocation more than half unused, so each byte would be copied about eight times over into
    freshly faulted pages. The flush releases the allocation."""
    cdef PyByteArrayObject* b = <PyByteArrayObject*>pending
    if (b.ob_start - b.ob_bytes) + used + size >= b.ob_alloc:
        PyByteArray_Resize(pending, max(2 * (used + size), _PENDING_FIRST))  # at least this, from ob_bytes
    Py_SET_SIZE(pending, used + size)
    b.ob_start[used + size] = 0  # bytearray keeps a trailing NUL
    return b.ob_start + used


cdef bytes _unsent(list queue, Py_ssize_t written):
    """The queued frames' bytes from offset `written` on, as one bytes for the transport."""
    cdef bytes data
    cdef Py_ssize_t size
    parts = []
    for data in queue:
        size = PyBytes_GET_SIZE(data)
        if written >= size:
            written -= size
        elif written:
            parts.append(data[written:])
            written = 0
        else:
            parts.append(data)
    return b"".join(parts)


cdef inline int _write_now(WSTransport t, const char* data, Py_ssize_t size) except -1:
    """One frame straight to the socket (a resend), counted."""
    global _sent_bytes, _direct_writes
    t._fast_write(<char*>data, size)
    _sent_bytes += size
    _direct_writes += 1
    return 0


cdef struct _Held:
    # A frame in a paused connection's `pending` that draining may drop or renumber.
    Py_ssize_t start
    Py_ssize_t end
    double deadline
    unsigned long long sequence_id


cdef int _hold(Connection conn, const char* data, Py_ssize_t size, double deadline,
               unsigned long long sequence_id) except -1:
    """The socket is backed up: keep the frame until resume_writing, up to max_outbound bytes.
    A frame that may expire is noted in `held`, with (on a reliable connection) every numbered
    one after it, so that draining can drop it and number the later ones again; each note counts
    its 32 bytes against max_outbound too."""
    global _dropped_bytes
    cdef bytearray pending = conn.pending
    cdef bytearray held = conn.held
    cdef Py_ssize_t used, noted = 0
    cdef bint note = deadline != 0.0 or (sequence_id != 0 and held is not None)
    cdef _Held* record
    if pending is None:
        pending = conn.pending = bytearray()
    used = PyByteArray_GET_SIZE(pending)
    if held is not None:
        noted = PyByteArray_GET_SIZE(held)
    if sequence_id and not conn.held_from:
        conn.held_from = sequence_id
    if used + size + noted + (<Py_ssize_t>sizeof(_Held) if note else 0) > conn.max_outbound:
        _dropped_bytes += used + size
        del pending[:]
        conn.held = None
        if conn.variant == JSON_RELIABLE or conn.variant == PROTOBUF_RELIABLE:
            # nothing from here on reaches this socket: the client recovers it, whatever expired skipped
            if not conn.unsent_from:
                conn.unsent_from = conn.held_from or sequence_id or conn.sequence_id + 1
            conn.held_from = 0
        conn.on_outbound_overflow()
        return 0
    memcpy(_append_room(pending, used, size), data, size)
    if note:
        if held is None:
            held = conn.held = bytearray()
        PyByteArray_Resize(held, noted + <Py_ssize_t>sizeof(_Held))
        record = <_Held*>(PyByteArray_AS_STRING(held) + noted)
        record.start = used
        record.end = used + size
        record.deadline = deadline
        record.sequence_id = sequence_id
    return 0


DEF OPCODE_TEXT = 0x1
DEF OPCODE_BINARY = 0x2
DEF SEQUENCE_PREFIX = b'{"sequenceId":'


cdef inline Py_ssize_t _header(unsigned char* out, int opcode, Py_ssize_t size) noexcept:
    """Write an unmasked, final-fragment server frame header; return its length."""
    out[0] = 0x80 | opcode
    if size < 126:
        out[1] = <unsigned char>size
        return 2
    if size < 65536:
        out[1] = 126
        out[2] = (size >> 8) & 0xFF
        out[3] = size & 0xFF
        return 4
    out[1] = 127
    cdef int i
    for i in range(8):
        out[9 - i] = (size >> (8 * i)) & 0xFF
    return 10


def trim_transport(WSTransport t):
    """After the handshake: drop what picows keeps but fastpush never uses again (the upgrade
    request and response, and most of a 1 KiB write buffer that fan-out bypasses), about 1.5 KB a
    connection. The buffer grows back by itself if a control frame needs it."""
    t.request = None
    t.response = None
    t._write_buffer = MemoryBuffer(16)


cpdef bytes frame(int opcode, bytes payload):
    """A complete server WebSocket frame around `payload`."""
    cdef unsigned char head[10]
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t h = _header(head, opcode, n)
    return (<char*>head)[:h] + payload


cdef class Connection(WSListener):
    """One client WebSocket: its identity, groups, roles and wire variant, and its transport."""

    def __init__(self, str connection_id, object user_id, str hub, object subprotocol, int variant):
        self.connection_id = connection_id
        self.user_id = user_id
        self.hub = hub
        self.subprotocol = subprotocol
        self.variant = variant
        self.groups = _EMPTY  # most connections never get a set of their own: 216 bytes saved
        self.roles = _EMPTY
        self.sequence_id = 0
        self.transport = None
        self.replay = None  # a deque from the first buffered message (reliable variants only)
        self.acked_sequence_id = 0
        self.replay_bytes = 0
        self.replay_overflowed = False
        self.replay_max_messages = 1000  # bounds of the replay buffer: set per server (ClientConnection)
        self.replay_max_bytes = 16 * 1024 * 1024
        self.resend_next = 0
        self.keep_session = False
        self.last_seen = 0.0
        self.close_reason = None
        self.paused = False
        self.max_outbound = 4 * 1024 * 1024
        self.held = None
        self.held_from = 0
        self.unsent_from = 0

    @property
    def protocol(self):
        return self.subprotocol

    @property
    def is_open(self):
        t = self.transport
        return t is not None and not t.is_disconnected and not t.is_close_frame_sent

    @property
    def queued_bytes(self):
        """Bytes waiting in this connection's own queues (not yet handed to the socket's transport)."""
        cdef Py_ssize_t size = len(self.pending) if self.pending is not None else 0
        if self.queue is not None:
            for data in self.queue:
                size += len(data)
        return size

    def acknowledge(self, unsigned long long sequence_id):
        """A cumulative sequenceAck: forget every buffered message up to `sequence_id`."""
        cdef Frames frames
        if sequence_id > self.sequence_id:
            sequence_id = self.sequence_id
        while self.acked_sequence_id < sequence_id and self.replay is not None and self.replay:
            frames = self.replay.popleft()
            self.replay_bytes -= frames.cost
            self.acked_sequence_id += 1

    def resend_unacknowledged(self, Py_ssize_t max_queued):
        """After recovery: write the buffered messages again, in order, each with its sequenceId.

        Stops once the transport holds more than `max_queued` bytes and returns False; call it
        again when the transport drains (resume_writing). Returns True when all is resent.
        An expired message is not written: from `unsent_from` on it leaves the buffer, and the
        later ones move up a number; before it (it may have reached the client) it is skipped.
        """
        cdef Frames frames
        cdef WSTransport t = self.transport
        cdef Py_ssize_t index
        cdef double now = 0.0
        if self.resend_next == 0:
            self.resend_next = self.acked_sequence_id + 1
            if not self.unsent_from:  # nothing known: every number may have reached the client
                self.unsent_from = self.sequence_id + 1
        while self.resend_next <= self.sequence_id:
            if t is None or t.is_disconnected or t.is_close_frame_sent:
                return False
            if self.resend_next <= self.acked_sequence_id:
                self.resend_next = self.acked_sequence_id + 1
                continue
            index = self.resend_next - self.acked_sequence_id - 1
            frames = self.replay[index]
            if frames.deadline != 0.0:
                if now == 0.0:
                    now = time.monotonic()
                if frames.deadline <= now:
                    if self.resend_next >= self.unsent_from:
                        del self.replay[index]
                        self.replay_bytes -= frames.cost
                        self.sequence_id -= 1
                    else:
                        self.resend_next += 1
                    continue
            frames._write_sequenced(self, self.resend_next, True)  # straight to the transport: flow control sees it
            self.resend_next += 1
            if t.underlying_transport.get_write_buffer_size() > max_queued:
                return False
        self.resend_next = 0
        self.unsent_from = 0
        return True

    def mark_unsent(self):
        """The socket is gone, or replaced by the client's new one: note from which sequenceId on
        nothing reached it (what a resend had not reached yet, what waited for a backed-up socket,
        or whatever comes next), for the resend to the next one."""
        if self.resend_next:
            self.unsent_from = self.resend_next
        elif not self.unsent_from:
            self.unsent_from = self.held_from or self.sequence_id + 1

    def on_replay_overflow(self):
        """Called once when the replay buffer passes its bounds; subclasses close the connection."""

    def on_outbound_overflow(self):
        """Called when more than max_outbound bytes wait for a paused socket (already dropped);
        subclasses close the connection."""

    def close(self, int code, str reason, bint notify=False):
        """End the connection with a close frame (`notify`: tell the client why first, where its
        subprotocol can); how depends on the kind of client, so subclasses define it."""
        raise NotImplementedError

    def pause(self):
        """The socket's buffer passed its high-water mark: hold frames from now on, behind the
        ones this turn had queued (they move to `pending`, so `queue` is empty while paused)."""
        self.paused = True
        self._queue_to_pending()

    def resume(self):
        """The socket drained: write what was held, and queue frames for the turn's end again."""
        self.paused = False
        self._write_pending()

    cdef bint _write(self, bytes data, double deadline) except -1:
        cdef WSTransport t = self.transport
        if t is None or t.is_disconnected or t.is_close_frame_sent:
            return False
        _deliver(self, data, deadline, 0)
        return True

    cdef void _flush(self) noexcept:
        """The end of a loop turn: write what the turn queued, unless the socket is backed up."""
        if self.paused:
            self._queue_to_pending()
        else:
            self._write_queue()

    cdef void _queue_to_pending(self) noexcept:
        """Copy the turn's queued frames into `pending`, in order, ahead of what is held next."""
        cdef list queue = self.queue
        cdef bytes data
        cdef Py_ssize_t used
        if queue is None or PyList_GET_SIZE(queue) == 0:
            return
        self.queue = None
        if self.pending is None:
            self.pending = bytearray()
        for data in queue:
            used = PyByteArray_GET_SIZE(self.pending)
            memcpy(_append_room(self.pending, used, PyBytes_GET_SIZE(data)), PyBytes_AS_STRING(data),
                   PyBytes_GET_SIZE(data))

    cdef void _write_queue(self) noexcept:
        """Write the turn's queued frames (_send_queued), then keep the emptied list for the next
        turn: a new list per connection per turn would be a garbage-collected allocation per
        member of every broadcast, and the collections they trigger showed in the tail latency."""
        cdef list queue = self.queue
        if queue is None or PyList_GET_SIZE(queue) == 0:
            return
        self.queue = None  # the transport's pause_writing, called as we write, finds nothing queued
        self._send_queued(queue)
        del queue[:]
        if self.queue is None:
            self.queue = queue

    cdef void _send_queued(self, list queue) noexcept:
        """One writev() for all of `queue` (in chunks of _IOV_CHUNK), the plain socket's fast path
        when the transport holds nothing else, as picows's own _fast_write does for one frame.
        What the socket does not take goes to the transport, which buffers it (and pauses us past
        its high-water mark)."""
        global _sent_bytes, _direct_writes, _coalesced_writes, _coalesced_frames
        cdef WSTransport t = self.transport
        cdef Py_ssize_t count = PyList_GET_SIZE(queue), total = 0, written = 0, done = 0, chunk, i, n
        cdef ssize_t sent
        cdef iovec iov[_IOV_CHUNK]
        cdef PyObject* item
        if t is None or t.is_disconnected or t.is_close_frame_sent:
            return
        try:
            if count == 1:
                _write_now(t, PyBytes_AS_STRING(<bytes>PyList_GET_ITEM(queue, 0)),
                           PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(queue, 0)))
                return
            for i in range(count):
                total += PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(queue, i))
            _sent_bytes += total
            _coalesced_writes += 1
            _coalesced_frames += count - 1
            if not t.is_secure and not <Py_ssize_t>t._tr_get_write_buffer_size():
                while done < count:
                    chunk = min(count - done, _IOV_CHUNK)
                    n = 0
                    for i in range(chunk):
                        item = PyList_GET_ITEM(queue, done + i)
                        iov[i].iov_base = PyBytes_AS_STRING(<bytes>item)
                        iov[i].iov_len = PyBytes_GET_SIZE(<bytes>item)
                        n += PyBytes_GET_SIZE(<bytes>item)
                    sent = writev(t._socket, iov, chunk)
                    if sent < 0:
                        break  # EAGAIN or an error: the transport takes it all and finds out which
                    written += sent
                    if sent < n:
                        break
                    done += chunk
                if written == total:
                    return
            t.underlying_transport.write(_unsent(queue, written))
        except Exception:  # the transport failed: its connection_lost ends the connection
            pass

    cdef void _write_pending(self) noexcept:
        """Write what waits (resume, flush): what a backed-up socket held, then what this turn
        queued (nothing while paused: pause() moved it into `pending`)."""
        self._write_held()
        self._write_queue()

    cdef void _write_held(self) noexcept:
        global _sent_bytes, _coalesced_writes
        cdef bytearray pending = self.pending
        cdef WSTransport t = self.transport
        if pending is None or PyByteArray_GET_SIZE(pending) == 0:
            return
        if t is not None and not t.is_disconnected and not t.is_close_frame_sent:
            try:
                if self.held is not None:
                    self._drop_expired_held()
                    pending = self.pending
                self.pending = None  # a pause_writing as we write starts a new one (pause())
                t._fast_write(PyByteArray_AS_STRING(pending), PyByteArray_GET_SIZE(pending))
                _sent_bytes += PyByteArray_GET_SIZE(pending)
                _coalesced_writes += 1
            except Exception:  # the transport failed: its connection_lost ends the connection
                pass
            self.held_from = 0
        elif self.held_from and not self.unsent_from:  # never written: a recovery resends them
            self.unsent_from = self.held_from
        self.held = None
        if self.pending is pending:
            self.pending = None
        if self.pending is None and PyByteArray_GET_SIZE(pending) <= _PENDING_KEEP:
            del pending[:]
            self.pending = pending

    cdef void _drop_expired_held(self) except *:
        """Before `pending` is written: cut out the held frames whose deadline has passed. On a
        reliable connection each leaves the replay buffer too and the numbered frames after it
        are framed again one number lower, so the client sees no gap: none of them was written."""
        cdef bytearray held = self.held
        cdef bytearray pending = self.pending
        cdef bytearray out
        cdef _Held* records = <_Held*>PyByteArray_AS_STRING(held)
        cdef Py_ssize_t count = PyByteArray_GET_SIZE(held) // <Py_ssize_t>sizeof(_Held)
        cdef Py_ssize_t i, n, index, pos = 0
        cdef unsigned long long seq, acked = self.acked_sequence_id, removed = 0
        cdef double now = time.monotonic()
        cdef Frames frames
        cdef bint renumber = not self.replay_overflowed and self.replay is not None
        for i in range(count):
            if records[i].deadline != 0.0 and records[i].deadline <= now:
                break
        else:
            self.held = None
            return  # nothing expired
        out = bytearray()
        for i in range(count):
            out += pending[pos:records[i].start]  # frames in between: nothing to drop or renumber
            pos = records[i].end
            seq = records[i].sequence_id
            # where it is in the replay buffer (a number acknowledged already, by a client that
            # acknowledged what it never got, has left it: that one cannot give its number away)
            index = <Py_ssize_t>(seq - acked - removed) - 1 if renumber and seq > acked else -1
            if records[i].deadline != 0.0 and records[i].deadline <= now:
                if index >= 0:
                    frames = self.replay[index]
                    del self.replay[index]
                    self.replay_bytes -= frames.cost
                    self.sequence_id -= 1
                    removed += 1
                continue
            if index >= 0 and removed:
                frames = self.replay[index]
                n = frames._build_sequenced(self.variant, seq - removed)
                out += frames._scratch[:n]
            else:
                out += pending[records[i].start:records[i].end]
        out += pending[pos:]
        self.pending = out
        self.held = None

    cdef void _purge_expired(self) except *:
        """The replay buffer is full: drop the expired messages that no socket was ever given
        (from unsent_from, or where a resend stands), so a client that is away keeps room for
        what it can still be sent. The later ones move up a number."""
        cdef unsigned long long first
        cdef Py_ssize_t skip, i
        cdef Frames frames
        cdef double now = time.monotonic()
        if not self.unsent_from or self.replay is None:
            return
        first = max(self.resend_next, self.unsent_from, self.acked_sequence_id + 1)
        skip = <Py_ssize_t>(first - self.acked_sequence_id) - 1
        if skip >= len(self.replay):
            return
        kept = deque()
        i = 0
        for frames in self.replay:
            if i >= skip and frames.deadline != 0.0 and frames.deadline <= now:
                self.replay_bytes -= frames.cost
                self.sequence_id -= 1
            else:
                kept.append(frames)
            i += 1
        self.replay = kept

    def send_frame(self, int opcode, bytes payload):
        """A single message for this connection (ack, pong, system message), in order with its
        broadcasts; False if the connection is not open."""
        cdef bytes data = frame(opcode, payload)
        return self._write(data, 0.0)

    def flush(self):
        """Write what waits now, held frames included (before a close frame, say)."""
        self._write_pending()

    def discard_pending(self):
        """A new socket (recovery) must not get bytes meant for the old one: they are resent."""
        self.queue = None
        if self.pending is not None:
            del self.pending[:]
        self.held = None
        if self.held_from and not self.unsent_from:
            self.unsent_from = self.held_from
        self.held_from = 0


cdef inline Py_ssize_t _varint(unsigned char* out, unsigned long long value) noexcept:
    cdef Py_ssize_t n = 0
    while value > 0x7F:
        out[n] = (value & 0x7F) | 0x80
        value >>= 7
        n += 1
    out[n] = <unsigned char>value
    return n + 1


cdef inline Py_ssize_t _varint_size(unsigned long long value) noexcept:
    cdef Py_ssize_t n = 1
    while value > 0x7F:
        value >>= 7
        n += 1
    return n


cdef class Frames:
    """One send, framed once per wire variant its targets use; see _fanout.pxd."""

    def __init__(self, object payload, object source, double deadline=0.0):
        self.payload = payload
        self.source = source
        self.raw_opcode = OPCODE_BINARY if payload.is_binary else OPCODE_TEXT
        self.cost = PyBytes_GET_SIZE(payload.data) + 64
        self.deadline = deadline

    cdef bytes raw_frame(self):
        if self._raw_frame is None:
            self._raw_frame = frame(self.raw_opcode, self.payload.data)
        return self._raw_frame

    cdef bytes json_frame(self):
        if self._json_frame is None:
            if self._json_tail is None:
                self._json_tail = message_tail(self.source, self.payload)
            self._json_frame = frame(OPCODE_TEXT, b"{" + self._json_tail)
        return self._json_frame

    cdef bytes pb_frame(self):
        if self._pb_frame is None:
            if self._pb_inner is None:
                self._pb_inner = data_message_inner(self.source, self.payload)
            head = bytearray(11)
            n = _varint(<unsigned char*>PyByteArray_AS_STRING(head) + 1, PyBytes_GET_SIZE(self._pb_inner))
            head[0] = 0x12  # DownstreamMessage.data_message, length-delimited
            self._pb_frame = frame(OPCODE_BINARY, bytes(head[:n + 1]) + self._pb_inner)
        return self._pb_frame

    cdef unsigned char* _scratch_for(self, Py_ssize_t size) except NULL:
        if self._scratch is None or len(self._scratch) < size:
            self._scratch = bytearray(size)
        return <unsigned char*>PyByteArray_AS_STRING(self._scratch)

    cdef bint _write_reliable(self, Connection conn) except -1:
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
            if not conn.replay or conn.replay[len(conn.replay) - 1] is not self:
                return False  # expired itself
            if len(conn.replay) > conn.replay_max_messages or conn.replay_bytes > conn.replay_max_bytes:
                conn.replay_overflowed = True
                conn.on_replay_overflow()
                return False
        if conn.resend_next:
            return False
        return self._write_sequenced(conn, conn.sequence_id)

    cdef bint _write_sequenced(self, Connection conn, unsigned long long sequence_id, bint direct=False) except -1:
        cdef WSTransport t = conn.transport
        cdef Py_ssize_t size
        cdef char* out
        if t is None or t.is_disconnected or t.is_close_frame_sent:
            return False
        size = self._build_sequenced(conn.variant, sequence_id)
        out = PyByteArray_AS_STRING(self._scratch)
        if direct:
            conn._write_queue()  # what this turn queued before (a system message, say) goes first
            _write_now(t, out, size)
        else:
            _deliver(conn, PyBytes_FromStringAndSize(out, size), self.deadline, sequence_id)
        return True

    cdef Py_ssize_t _build_sequenced(self, int variant, unsigned long long sequence_id) except -1:
        """This message's whole frame for one reliable member, in the scratch buffer; its size."""
        if variant == JSON_RELIABLE:
            return self._build_json_sequenced(sequence_id)
        return self._build_pb_sequenced(sequence_id)

    cdef Py_ssize_t _build_json_sequenced(self, unsigned long long sequence_id) except -1:
        """`{"sequenceId":N,` spliced in front of the shared envelope tail."""
        cdef char digits[24]
        cdef int nd
        cdef Py_ssize_t tail, size, h
        cdef unsigned char* out
        if self._json_tail is None:
            self._json_tail = message_tail(self.source, self.payload)
        tail = PyBytes_GET_SIZE(self._json_tail)
        out = self._scratch_for(14 + 10 + 24 + tail)
        nd = snprintf(digits, 24, b"%llu,", sequence_id)
        size = 14 + nd + tail
        h = _header(out, OPCODE_TEXT, size)
        memcpy(out + h, <const char*>SEQUENCE_PREFIX, 14)
        memcpy(out + h + 14, digits, nd)
        memcpy(out + h + 14 + nd, PyBytes_AS_STRING(self._json_tail), tail)
        return h + size

    cdef Py_ssize_t _build_pb_sequenced(self, unsigned long long sequence_id) except -1:
        """DownstreamMessage{data_message = shared fields + sequence_id (field 4)}."""
        cdef Py_ssize_t inner, body, size, pos
        cdef unsigned char* out
        if self._pb_inner is None:
            self._pb_inner = data_message_inner(self.source, self.payload)
        inner = PyBytes_GET_SIZE(self._pb_inner)
        body = inner + 1 + _varint_size(sequence_id)
        size = 1 + _varint_size(body) + body
        out = self._scratch_for(10 + size)
        pos = _header(out, OPCODE_BINARY, size)
        out[pos] = 0x12
        pos += 1
        pos += _varint(out + pos, body)
        memcpy(out + pos, PyBytes_AS_STRING(self._pb_inner), inner)
        pos += inner
        out[pos] = 0x20  # DataMessage.sequence_id, varint
        pos += 1
        pos += _varint(out + pos, sequence_id)
        return pos


cpdef Py_ssize_t fanout(object targets, Frames frames, object excluded=None, object predicate=None) except -1:
    """Write `frames` to every open connection of `targets` not in `excluded` and passing `predicate`.

    Returns the number of connections written to (reliable connections that are away count
    only when their client recovers). An exception for one recipient (its filter, its transport,
    its overflow handler) is contained: counted, logged, and the loop goes on with the next one.
    The `try` is entered once per broadcast, not once per recipient. Each call is counted and timed
    for the metrics (fanout_counts).
    """
    global _broadcasts, _deliveries
    cdef long long started = _now_ns()
    cdef Connection conn
    cdef Py_ssize_t delivered = 0
    cdef bytes data
    cdef int variant
    cdef tuple members = tuple(targets)
    cdef Py_ssize_t count = len(members)
    cdef Py_ssize_t i = 0
    cdef object conflate = frames.conflate
    cdef bint rated = conflate is not None and conflate.interval > 0.0
    while i < count:
        try:
            while i < count:
                conn = <Connection>members[i]
                i += 1
                if excluded is not None and conn.connection_id in excluded:
                    continue
                if predicate is not None and not predicate(conn):
                    continue
                if (conflate is not None and (conn.paused or rated or conn.conflation is not None)
                        and _conflation_offer(conn, frames, conflate)):
                    continue  # it waits as its group's latest value (fastpush.conflation)
                variant = conn.variant
                if variant == RAW:
                    data = frames.raw_frame()
                elif variant == JSON:
                    data = frames.json_frame()
                elif variant == PROTOBUF:
                    data = frames.pb_frame()
                else:
                    delivered += frames._write_reliable(conn)
                    continue
                delivered += conn._write(data, frames.deadline)
        except Exception as exc:
            _recipient_failed(members[i - 1], exc)
    _broadcasts += 1
    _deliveries += delivered
    _observe_fanout(_now_ns() - started)
    return delivered


cdef double _failure_logged_at = -1e9


def recipient_failures():
    """How many times one recipient's failure was contained by the fan-out loop (since start)."""
    return _recipient_failures


cdef void _recipient_failed(object conn, object exc):
    """Count every failure; log at most one a second (with its traceback: it is our bug)."""
    global _recipient_failures, _failure_logged_at
    _recipient_failures += 1
    now = time.monotonic()
    if now - _failure_logged_at >= 1.0:
        _failure_logged_at = now
        _log.error("fan-out to connection %s failed (%d failures so far); the others still get the message",
                   getattr(conn, "connection_id", "?"), _recipient_failures, exc_info=exc)


cdef class Tables:
    """Who is connected to one hub: connections by id, group members, connections per user."""

    def __init__(self):
        self.connections = {}
        self.groups = {}
        self.users = {}

    def add(self, Connection conn):
        self.connections[conn.connection_id] = conn
        if conn.user_id is not None:
            members = self.users.get(conn.user_id)
            if members is None:
                self.users[conn.user_id] = members = set()
            members.add(conn)

    def remove(self, Connection conn):
        """Forget `conn` everywhere; returns False if it was not registered."""
        if self.connections.pop(conn.connection_id, None) is None:
            return False
        for group in conn.groups:
            self._discard(self.groups, group, conn)
        conn.groups = _EMPTY
        if conn.user_id is not None:
            self._discard(self.users, conn.user_id, conn)
        return True

    def join(self, Connection conn, str group):
        """Add `conn` to `group`; returns False if it already was a member."""
        if group in conn.groups:
            return False
        if type(conn.groups) is not set:
            conn.groups = set()
        conn.groups.add(group)
        members = self.groups.get(group)
        if members is None:
            self.groups[group] = members = set()
        members.add(conn)
        return True

    def leave(self, Connection conn, str group):
        if group not in conn.groups:
            return False
        conn.groups.discard(group)
        self._discard(self.groups, group, conn)
        return True

    def group_members(self, str group):
        return self.groups.get(group, ())

    def user_connections(self, str user_id):
        return self.users.get(user_id, ())

    cdef void _discard(self, dict table, str key, Connection conn):
        members = table.get(key)
        if members is not None:
            members.discard(conn)
            if not members:
                del table[key]
