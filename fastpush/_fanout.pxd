# The hot path's C-level API.
#
# Design notes:
# - A Connection *is* the picows listener of its WebSocket (one object per connection, no
#   separate session object), and holds the per-connection state the fan-out loop reads.
# - A send is framed once per wire variant (raw, JSON envelope) into complete WebSocket frames;
#   server frames are unmasked, so the same bytes go to every member. The reliable JSON variant
#   differs only by its per-connection sequenceId, spliced in front of a prebuilt envelope tail.
# - Frames are written with WSTransport._fast_write (a direct send() when the transport has
#   nothing queued, else the transport's own buffering), after checking the transport is open.
from picows.picows cimport WSListener, WSTransport

cdef enum Variant:
    VARIANT_RAW = 0
    VARIANT_JSON = 1
    VARIANT_JSON_RELIABLE = 2

cdef class Connection(WSListener):
    cdef public str connection_id
    cdef public object user_id
    cdef public str hub
    cdef public object subprotocol
    cdef public set groups
    cdef public set roles
    cdef public int variant
    cdef public unsigned long long sequence_id
    cdef public WSTransport transport

    cdef bint _write(self, const char* data, Py_ssize_t size) except -1

cdef class Frames:
    cdef readonly bytes raw_frame
    cdef readonly bytes json_frame
    cdef readonly bytes json_tail
    cdef int raw_opcode
    cdef bytearray _scratch

    cdef bint _write_reliable(self, Connection conn) except -1

cdef class Tables:
    cdef readonly dict connections
    cdef readonly dict groups
    cdef readonly dict users

    cdef void _discard(self, dict table, str key, Connection conn)
