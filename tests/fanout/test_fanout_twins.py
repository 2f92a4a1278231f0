"""The compiled fan-out (`fastpush._fanout`) and its pure-Python twin (`fastpush._fanout_py`) give
every connection the same bytes: a hypothesis state machine drives both with the same random
joins, leaves, sends to all/groups/users/connections (every payload type and wire variant),
acknowledgements, single frames, removals, paused sockets (and their overflow), dropped sockets
and recovery, sends with a time to live (one that has expired, one that will not), and compares
what each connection received, its state, and what each call returned."""
from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from picows import WSTransport

from fastpush import _fanout, _fanout_py
from fastpush.protocol.json_protocol import GroupSource, ServerSource
from fastpush.protocol.payload import DataType, Payload
from fastpush.protocol.variants import Variant

IMPLEMENTATIONS = (_fanout, _fanout_py)
GROUPS = ("g1", "g2", "g3")
# A send's deadline: none, one already passed (whatever waits with it is dropped where it waits),
# one that will not pass during the test. Nothing in between: both sides must see the same expiry.
DEADLINES = {"none": 0.0, "expired": 1.0, "live": 1e12}
USERS = (None, "u1", "u2")
_log = logging.getLogger("tests.fanout")


class CapturingTransport:
    """Stands in for the socket's asyncio transport: keeps every byte written to it. A non-empty
    write buffer makes picows' fast path hand the bytes here instead of calling send()."""

    def __init__(self):
        self.sock = socket.socket()
        self.data = bytearray()

    def get_extra_info(self, name, default=None):
        return self.sock if name == "socket" else default

    def get_write_buffer_size(self) -> int:
        return 1

    def write(self, data) -> None:
        self.data += data

    def close(self) -> None:
        self.sock.close()


payloads = st.one_of(
    st.builds(lambda t: Payload(DataType.TEXT, t.encode()), st.text(max_size=200)),
    st.builds(lambda b: Payload(DataType.BINARY, b), st.binary(max_size=300)),
    st.builds(lambda n: Payload(DataType.JSON, b'{"n":%d}' % n), st.integers(-10**6, 10**6)),
    st.builds(lambda b: Payload(DataType.PROTOBUF, b), st.binary(max_size=40)),
)


def _recording(impl):
    """impl's Connection, noting each overflow callback (the server's subclass closes the client)."""
    class Recording(impl.Connection):
        __slots__ = ("overflows",)

        def __init__(self, *args):
            super().__init__(*args)
            self.overflows = []

        def on_replay_overflow(self):
            self.overflows.append("replay")

        def on_outbound_overflow(self):
            self.overflows.append("outbound")
    return Recording


class Twins(RuleBasedStateMachine):
    @initialize(variants=st.lists(st.sampled_from(Variant), min_size=1, max_size=8),
                users=st.lists(st.sampled_from(USERS), min_size=8, max_size=8),
                replay_max_messages=st.integers(1, 40), replay_max_bytes=st.integers(100, 20_000),
                max_outbound=st.integers(0, 3_000))
    def connect(self, variants, users, replay_max_messages, replay_max_bytes, max_outbound):
        self.loop = asyncio.new_event_loop()
        self.sides = []
        for impl in IMPLEMENTATIONS:
            tables, conns, captures = impl.Tables(), [], []
            for i, variant in enumerate(variants):
                conn = _recording(impl)(f"c{i}", users[i], "h", None, variant)
                conn.replay_max_messages, conn.replay_max_bytes = replay_max_messages, replay_max_bytes
                conn.max_outbound = max_outbound
                capture = CapturingTransport()
                conn.transport = WSTransport(False, capture, _log, self.loop)
                tables.add(conn)
                conns.append(conn)
                captures.append([capture])  # every socket the connection had, in order
            self.sides.append((impl, tables, conns, captures))
        self.count = len(variants)

    def _each(self, action):
        """Run `action(impl, tables, conns)` on both sides inside the loop, then end the turn; both
        must return the same."""
        async def step():
            results = [action(impl, tables, conns) for impl, tables, conns, _ in self.sides]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return results
        compiled, twin = self.loop.run_until_complete(step())
        assert compiled == twin
        return compiled

    @rule(i=st.integers(0, 7), group=st.sampled_from(GROUPS))
    def join(self, i, group):
        self._each(lambda impl, tables, conns: tables.join(conns[i % self.count], group))

    @rule(i=st.integers(0, 7), group=st.sampled_from(GROUPS))
    def leave(self, i, group):
        self._each(lambda impl, tables, conns: tables.leave(conns[i % self.count], group))

    @rule(i=st.integers(0, 7))
    def remove(self, i):
        self._each(lambda impl, tables, conns: tables.remove(conns[i % self.count]))

    @rule(where=st.sampled_from(["all", "group", "user", "connection"]), group=st.sampled_from(GROUPS),
          user=st.sampled_from(USERS[1:]), payload=payloads, excluded=st.sets(st.integers(0, 7), max_size=3),
          only_user=st.sampled_from([None, "u1"]), burst=st.integers(1, 3), ttl=st.sampled_from(sorted(DEADLINES)))
    def send(self, where, group, user, payload, excluded, only_user, burst, ttl):
        excluded_ids = frozenset(f"c{i}" for i in excluded) or None
        predicate = None if only_user is None else (lambda c: c.user_id == only_user)
        deadline = DEADLINES[ttl]
        event(f"send: ttl {ttl}")

        def act(impl, tables, conns):
            delivered = []
            for _ in range(burst):  # several sends in one turn: coalesced the same way
                if where == "all":
                    frames = impl.Frames(payload, ServerSource(), deadline)
                    delivered.append(impl.fanout(tables.connections.values(), frames, excluded_ids, predicate))
                elif where == "group":
                    frames = impl.Frames(payload, GroupSource(group, user), deadline)
                    delivered.append(impl.fanout(tables.group_members(group), frames, excluded_ids, predicate))
                elif where == "user":
                    delivered.append(impl.fanout(tables.user_connections(user),
                                                 impl.Frames(payload, ServerSource(), deadline), None, predicate))
                else:
                    delivered.append(impl.fanout((conns[0],), impl.Frames(payload, ServerSource(), deadline)))
            return delivered
        self._each(act)

    @rule(i=st.integers(0, 7), data=st.binary(max_size=50))
    def single_frame(self, i, data):
        self._each(lambda impl, tables, conns: conns[i % self.count].send_frame(0x2, data))

    @rule(i=st.integers(0, 7), sequence_id=st.integers(0, 40))
    def acknowledge(self, i, sequence_id):
        self._each(lambda impl, tables, conns: conns[i % self.count].acknowledge(sequence_id))

    @rule(i=st.integers(0, 7))
    def pause(self, i):
        """The socket's buffer is over its high-water mark: frames wait, up to max_outbound bytes."""
        self._each(lambda impl, tables, conns: conns[i % self.count].pause())

    @rule(i=st.integers(0, 7))
    def resume(self, i):
        self._each(lambda impl, tables, conns: conns[i % self.count].resume())

    @rule(i=st.integers(0, 7))
    def flush(self, i):
        self._each(lambda impl, tables, conns: conns[i % self.count].flush())

    @rule(i=st.integers(0, 7))
    def drop(self, i):
        """The socket is gone; a reliable session notes what never reached it and goes on buffering."""
        def act(impl, tables, conns):
            conns[i % self.count].transport = None
            conns[i % self.count].mark_unsent()
        self._each(act)

    @rule(i=st.integers(0, 7), max_queued=st.sampled_from([0, 40, 10**9]))
    def recover(self, i, max_queued):
        """A new socket, as ClientConnection.on_ws_connected resumes a session: what waited for the
        old socket is dropped, and the unacknowledged messages are resent."""
        k = i % self.count
        for _, _, conns, captures in self.sides:
            capture = CapturingTransport()
            conns[k].transport = WSTransport(False, capture, _log, self.loop)
            captures[k].append(capture)

        def act(impl, tables, conns):
            conns[k].discard_pending()
            conns[k].mark_unsent()
            conns[k].resend_next = 0
            return conns[k].resend_unacknowledged(max_queued), conns[k].resend_next
        done, resend_next = self._each(act)
        event(f"recover: resent all {done}, resuming at {'0' if not resend_next else 'n'}")

    @invariant()
    def same_bytes_and_state(self):
        if not hasattr(self, "sides"):
            return
        (_, compiled_tables, compiled, compiled_bytes), (_, twin_tables, twin, twin_bytes) = self.sides
        for a, b, ca, cb in zip(compiled, twin, compiled_bytes, twin_bytes, strict=True):
            assert [bytes(c.data) for c in ca] == [bytes(c.data) for c in cb], \
                f"{a.connection_id} (variant {a.variant}) got different bytes"
            assert (a.sequence_id, a.acked_sequence_id, len(a.replay or ()), a.replay_bytes, a.replay_overflowed,
                    a.resend_next, a.unsent_from, a.paused, a.is_open, a.overflows) == \
                   (b.sequence_id, b.acked_sequence_id, len(b.replay or ()), b.replay_bytes, b.replay_overflowed,
                    b.resend_next, b.unsent_from, b.paused, b.is_open, b.overflows)
            if a.replay is not None and not a.replay_overflowed:  # a number is a place in the buffer
                assert a.sequence_id == a.acked_sequence_id + len(a.replay)
            assert set(a.groups) == set(b.groups)
        assert set(compiled_tables.groups) == set(twin_tables.groups)
        assert {g: {c.connection_id for c in m} for g, m in compiled_tables.groups.items()} == \
               {g: {c.connection_id for c in m} for g, m in twin_tables.groups.items()}
        assert {u: {c.connection_id for c in m} for u, m in compiled_tables.users.items()} == \
               {u: {c.connection_id for c in m} for u, m in twin_tables.users.items()}

    def teardown(self):
        if hasattr(self, "sides"):
            for *_, captures in self.sides:
                for history in captures:
                    for capture in history:
                        capture.close()
            self.loop.close()


TestTwins = Twins.TestCase
TestTwins.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=["compiled", "python"])
def test_frames_are_well_formed(impl):
    """Both implementations frame the three length classes of RFC 6455 alike."""
    for size in (0, 125, 126, 65535, 65536):
        data = impl.frame(0x2, b"x" * size)
        assert data[0] == 0x82
        length = data[1] & 0x7F
        if size < 126:
            assert length == size and len(data) == 2 + size
        elif size < 65536:
            assert length == 126 and int.from_bytes(data[2:4], "big") == size
        else:
            assert length == 127 and int.from_bytes(data[2:10], "big") == size


class _Broken(CapturingTransport):
    """A socket whose peer went away: every write fails."""

    def write(self, data) -> None:
        raise ConnectionResetError("gone")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=["compiled", "python"])
def test_a_failing_flush_never_keeps_the_others_bytes_back(impl):
    """The end of a loop turn writes what each connection queued; one transport failing there
    is ignored (its connection_lost ends it), and the next connections are still written to."""
    loop = asyncio.new_event_loop()
    captures = [_Broken(), CapturingTransport()]
    conns = []
    for i, capture in enumerate(captures):
        conn = impl.Connection(f"c{i}", None, "h", None, Variant.RAW)
        conn.transport = WSTransport(False, capture, _log, loop)
        conns.append(conn)

    async def burst() -> None:
        for text in (b"one", b"two", b"three"):
            impl.fanout(conns, impl.Frames(Payload(DataType.TEXT, text), ServerSource()))
        await asyncio.sleep(0)  # the turn ends: the queued frames are written
        await asyncio.sleep(0)

    try:
        loop.run_until_complete(burst())
        assert bytes(captures[1].data) == b"".join(impl.frame(0x1, t) for t in (b"one", b"two", b"three"))
        assert bytes(captures[0].data) == b""
    finally:
        for capture in captures:
            capture.close()
        loop.close()
