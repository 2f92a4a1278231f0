# The hot path's C-level API.
#
# Design notes:
# - A Connection *is* the picows listener of its WebSocket (one object per connection, no
#   separate session object), and holds the per-connection state the fan-out loop reads.
# - A send is framed once per wire variant (raw, JSON envelope, protobuf message) into complete
#   WebSocket frames; server frames are unmasked, so the same bytes go to every member. The
#   reliable variants differ only by their per-connection sequenceId: spliced in front of a
#   prebuilt JSON envelope tail, or appended to the prebuilt protobuf message fields.
# - A reliable connection keeps a reference to each Frames it was sent (not a copy) until the
#   client acknowledges it, so recovery can rebuild the same frames with the same sequenceIds.
#   The buffer is bounded by count and bytes; past either the connection is told once through
#   on_replay_overflow() and buffers nothing more.
# - A send with a time to live carries its deadline (time.monotonic(); 0.0 for none). Nothing on
#   the fan-out path reads it: only the places a message can wait do, the paused socket's queue
#   (`held`, checked when it drains) and the replay buffer (checked when it is resent), so a send
#   without one costs nothing. A reliable client's sequenceIds stay contiguous: a message expired
#   before it was ever written gives its number to the next one; one that may have reached the
#   client keeps its number and is skipped (see unsent_from).
# - A connection's frames of one loop turn leave together when the turn ends: one writev() on the
#   socket when its transport has nothing buffered (else, and for what the socket does not take,
#   the transport's own buffering), after checking the transport is open.
from picows.picows cimport WSListener, WSTransport

# The wire variants of fastpush/protocol/variants.py, mirrored so that the fan-out loop compares C
# integers; cpdef makes the module export it as an IntEnum, `_fanout.Variant`, which
# tests/fanout/test_variants.py checks against the Python one, member by member.
cpdef enum Variant:
    RAW = 0
    JSON = 1
    JSON_RELIABLE = 2
    PROTOBUF = 3
    PROTOBUF_RELIABLE = 4

cdef class Connection(WSListener):
    cdef public str connection_id
    cdef public object user_id
    cdef public str hub
    cdef public object subprotocol
    cdef public object groups  # a set, or the shared empty frozenset until it has one
    cdef public object roles   # the same
    cdef public int variant
    cdef public unsigned long long sequence_id
    cdef public WSTransport transport
    # Reliable variant: data messages not yet acknowledged, oldest first (the one at index i
    # carries sequenceId acked_sequence_id + 1 + i), and their envelope bytes.
    cdef public object replay
    cdef public unsigned long long acked_sequence_id
    cdef public Py_ssize_t replay_bytes
    cdef public bint replay_overflowed
    cdef public Py_ssize_t replay_max_messages
    cdef public Py_ssize_t replay_max_bytes
    # Non-zero while recovery is resending: the next sequenceId to resend. Live messages are
    # only buffered meanwhile, so they follow the resent ones in order.
    cdef public unsigned long long resend_next
    # True while losing the socket should keep the session for recovery (reliable clients);
    # cleared when the client closes on purpose or the server ends the session.
    cdef public bint keep_session
    # time.monotonic() of the last frame from the client: the heartbeat sweep pings the quiet
    # ones and drops those silent past the idle timeout.
    cdef public double last_seen
    cdef public object close_reason  # why the session ended, for the `disconnected` event
    # Write coalescing: a loop turn's frames for this connection wait in `queue` (references to
    # the frames, shared with the broadcast's other members; None until the first, then kept
    # between turns) and leave in one writev() when the turn ends (see _deliver and _write_queue).
    cdef list queue
    cdef object coalescer  # its event loop's _Coalescer, set on first write
    # Flow control: while the socket's own buffer is over its small high-water mark (`paused`),
    # frames are copied into `pending` instead (the turn's queue first); past `max_outbound`
    # bytes there the client is too slow:
    # what waits is dropped and on_outbound_overflow() closes it, its close frame right behind
    # the little the socket already holds (not behind megabytes it could not read).
    cdef bytearray pending
    cdef public bint paused
    cdef public Py_ssize_t max_outbound
    # Frames waiting in `pending` (paused) that draining may drop or renumber, packed as C
    # records (start, end, deadline, sequenceId or 0; _Held in _fanout.pyx): those with a deadline
    # and, on a reliable connection, every numbered one after the first of those; None when none.
    cdef bytearray held
    # The first sequenceId waiting in `pending` while paused (0: none): never written.
    cdef unsigned long long held_from
    # Reliable variant: the first sequenceId that never reached a socket, once one was lost (0:
    # none known). Below it an expired message may have reached the client: it keeps its number
    # and is skipped; from it on an expired message is dropped and the later ones move up a number.
    cdef public unsigned long long unsent_from
    # fastpush.conflation's state (None while nothing waits and no rate limit runs): read by
    # fanout() only for a send to a conflated group.
    cdef public object conflation

    cdef bint _write(self, bytes data, double deadline) except -1
    cdef void _flush(self) noexcept
    cdef void _queue_to_pending(self) noexcept
    cdef void _write_queue(self) noexcept
    cdef void _send_queued(self, list queue) noexcept
    cdef void _write_pending(self) noexcept
    cdef void _write_held(self) noexcept
    cdef void _drop_expired_held(self) except *
    cdef void _purge_expired(self) except *

cdef class Frames:
    # The send itself, and each wire variant's bytes, built the first time a member needs them.
    cdef readonly object payload
    cdef readonly object source
    cdef readonly Py_ssize_t cost  # what one buffered copy counts against a replay byte limit
    cdef readonly double deadline  # time.monotonic() past which no connection may be sent it; 0.0: never
    cdef public object conflate  # a send to a conflated group: its fastpush.conflation.Conflation, else None
    cdef int raw_opcode
    cdef bytes _raw_frame
    cdef bytes _json_tail
    cdef bytes _json_frame
    cdef bytes _pb_inner
    cdef bytes _pb_frame
    cdef bytearray _scratch

    cdef bytes raw_frame(self)
    cdef bytes json_frame(self)
    cdef bytes pb_frame(self)
    cdef unsigned char* _scratch_for(self, Py_ssize_t size) except NULL
    cdef bint _write_reliable(self, Connection conn) except -1
    cdef bint _write_sequenced(self, Connection conn, unsigned long long sequence_id, bint direct=*) except -1
    cdef Py_ssize_t _build_sequenced(self, int variant, unsigned long long sequence_id) except -1
    cdef Py_ssize_t _build_json_sequenced(self, unsigned long long sequence_id) except -1
    cdef Py_ssize_t _build_pb_sequenced(self, unsigned long long sequence_id) except -1

cdef class Tables:
    cdef readonly dict connections
    cdef readonly dict groups
    cdef readonly dict users

    cdef void _discard(self, dict table, str key, Connection conn)
