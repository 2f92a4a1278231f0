"""A message with a time to live is never written after its deadline, wherever it waits: the queue
of a backed-up socket, the replay buffer of a reliable session that is away, the resend after a
recovery. A reliable client's sequenceIds stay contiguous where the message never reached a socket;
where it may have, its number is skipped. Both fan-out implementations, through fake sockets that
keep every byte; the deadlines are either passed already or far away, so nothing here waits."""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import pytest
from picows import WSTransport

from fastpush import _fanout, _fanout_py
from fastpush import ops as fastpush_ops
from fastpush.expiry import NEVER, expires_at, local_deadline, wall_time
from fastpush.hub import Hub
from fastpush.protocol.json_protocol import ServerSource
from fastpush.protocol.payload import DataType, Payload
from fastpush.protocol.variants import Variant
from tests.doubles import FakeConnection, RecordingRegistry

IMPLEMENTATIONS = pytest.mark.parametrize("impl", [_fanout, _fanout_py], ids=["compiled", "python"])
EXPIRED, LIVE = 1.0, 1e12  # time.monotonic() deadlines: long past, and never reached
_log = logging.getLogger("tests.expiry")


class Socket:
    """The socket's asyncio transport, keeping every byte (a non-empty write buffer makes picows'
    fast path hand them here)."""

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


def frames_in(data: bytes) -> list[bytes]:
    """The payloads of the server frames in `data` (unmasked, final, as fastpush writes them)."""
    out, pos = [], 0
    while pos < len(data):
        size, pos = data[pos + 1] & 0x7F, pos + 2
        if size == 126:
            size, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif size == 127:
            size, pos = int.from_bytes(data[pos:pos + 8], "big"), pos + 8
        out.append(bytes(data[pos:pos + size]))
        pos += size
    return out


def messages(data: bytes) -> list[tuple[int | None, str]]:
    """(sequenceId, text) of each JSON data message; other frames (single frames) as (None, text)."""
    out = []
    for payload in frames_in(data):
        try:
            message = json.loads(payload)
        except ValueError:
            out.append((None, payload.decode()))
            continue
        out.append((message.get("sequenceId"), message["data"]))
    return out


class Rig:
    """One connection of `impl` on a loop, with the sockets it has had."""

    def __init__(self, impl, variant=Variant.JSON_RELIABLE):
        self.impl = impl
        self.loop = asyncio.new_event_loop()
        self.overflows = 0

        class Conn(impl.Connection):
            def on_outbound_overflow(conn):
                self.overflows += 1
        self.conn = Conn("c1", None, "h", None, variant)
        self.sockets: list[Socket] = []
        self.connect()

    def connect(self) -> None:
        capture = Socket()
        self.sockets.append(capture)
        self.conn.transport = WSTransport(False, capture, _log, self.loop)

    def send(self, text: str, deadline: float = NEVER) -> None:
        frames = self.impl.Frames(Payload(DataType.TEXT, text.encode()), ServerSource(), deadline)
        self.loop.run_until_complete(self._fanout(frames))

    async def _fanout(self, frames) -> None:
        self.impl.fanout((self.conn,), frames)
        await asyncio.sleep(0)  # the loop turn ends: coalesced bytes are written
        await asyncio.sleep(0)

    def lose(self) -> None:
        """The socket goes, as the session sees it (ClientSession.lost)."""
        self.conn.transport = None
        self.conn.mark_unsent()

    def recover(self) -> bool:
        """A new socket and the resend, as ClientSession.opened and reliable.resend do it."""
        self.connect()
        self.conn.discard_pending()
        self.conn.mark_unsent()
        self.conn.resend_next = 0
        return self.conn.resend_unacknowledged(10**9)

    def got(self, index: int = -1) -> list[tuple[int | None, str]]:
        return messages(bytes(self.sockets[index].data))

    def close(self) -> None:
        for capture in self.sockets:
            capture.close()
        self.loop.close()


@pytest.fixture
def rigs():
    made: list[Rig] = []

    def make(impl, variant=Variant.JSON_RELIABLE) -> Rig:
        made.append(Rig(impl, variant))
        return made[-1]
    yield make
    for rig in made:
        rig.close()


# --- the queue of a backed-up socket ---------------------------------------------------------------
@IMPLEMENTATIONS
@pytest.mark.parametrize("variant", [Variant.RAW, Variant.JSON])
def test_a_paused_socket_never_gets_what_expired_while_it_waited(impl, variant, rigs):
    rig = rigs(impl, variant)
    rig.conn.pause()
    rig.send("kept")
    rig.send("stale", EXPIRED)
    rig.conn.send_frame(0x1, b"an ack")
    rig.send("fresh", LIVE)
    rig.send("after")
    rig.conn.resume()
    texts = [text for _, text in rig.got()] if variant == Variant.JSON else [p.decode() for p in frames_in(
        bytes(rig.sockets[0].data))]
    assert texts == ["kept", "an ack", "fresh", "after"]


@IMPLEMENTATIONS
def test_what_a_paused_socket_notes_about_its_frames_counts_against_its_limit(impl, rigs):
    """Each frame that may expire costs a 32-byte note besides its bytes: a flood of tiny messages
    with a TTL cannot make a client's queue hold more than max_outbound bytes in all."""
    rig = rigs(impl, Variant.RAW)
    rig.conn.max_outbound = 1000
    rig.conn.pause()
    sent = 0
    while not rig.overflows:
        rig.send("x", LIVE)  # a 3-byte frame
        sent += 1
    assert sent == 1000 // (3 + 32) + 1


@IMPLEMENTATIONS
def test_a_paused_reliable_client_gets_contiguous_numbers_around_what_expired(impl, rigs):
    rig = rigs(impl)
    rig.send("one")  # written at once
    rig.conn.pause()
    rig.send("two")
    rig.send("stale", EXPIRED)
    rig.conn.send_frame(0x1, b"an ack")
    rig.send("three", LIVE)
    rig.send("stale too", EXPIRED)
    rig.send("four")
    rig.conn.resume()
    assert rig.got() == [(1, "one"), (2, "two"), (None, "an ack"), (3, "three"), (4, "four")]
    assert rig.conn.sequence_id == 4 and [f.payload.data for f in rig.conn.replay] == [b"one", b"two", b"three",
                                                                                     b"four"]
    assert rig.conn.replay_bytes == sum(len(t) + 64 for t in ("one", "two", "three", "four"))
    rig.send("five")
    assert rig.got()[-1] == (5, "five")


@IMPLEMENTATIONS
def test_what_is_still_live_when_the_socket_drains_is_written(impl, rigs):
    rig = rigs(impl)
    rig.conn.pause()
    rig.send("live", LIVE)
    rig.send("plain")
    rig.conn.resume()
    assert rig.got() == [(1, "live"), (2, "plain")]


@IMPLEMENTATIONS
def test_a_client_that_acknowledged_what_it_never_got_sees_the_gap_it_asked_for(impl, rigs):
    """A sequenceAck past what was written (a buggy client) forgets those messages: an expired one
    among them cannot be numbered away any more, so the client sees its number missing."""
    rig = rigs(impl)
    rig.conn.pause()
    rig.send("stale", EXPIRED)
    rig.send("two")
    rig.conn.acknowledge(2)
    rig.conn.resume()
    assert rig.got() == [(2, "two")] and rig.conn.sequence_id == 2


# --- the replay buffer and the resend --------------------------------------------------------------
@IMPLEMENTATIONS
def test_what_expired_while_the_client_was_away_leaves_no_gap(impl, rigs):
    rig = rigs(impl)
    rig.send("one")
    rig.lose()
    rig.send("stale", EXPIRED)
    rig.send("two", LIVE)
    rig.send("stale too", EXPIRED)
    rig.send("three")
    assert rig.recover()
    assert rig.got() == [(1, "one"), (2, "two"), (3, "three")]
    assert (rig.conn.sequence_id, rig.conn.unsent_from, rig.conn.resend_next) == (3, 0, 0)
    rig.send("four")
    assert rig.got()[-1] == (4, "four")


@IMPLEMENTATIONS
def test_an_expired_message_that_may_have_reached_the_client_keeps_its_number(impl, rigs):
    """Written to the socket that was lost: the client may have it, so renumbering the later ones
    would make it drop one of them as a duplicate. The resend skips it: a gap at most."""
    rig = rigs(impl)
    rig.send("stale", EXPIRED)
    rig.send("two")
    rig.lose()
    rig.send("three")
    assert rig.recover()
    assert rig.got() == [(2, "two"), (3, "three")]


@IMPLEMENTATIONS
def test_what_waited_for_a_socket_too_slow_to_keep_never_reached_it(impl, rigs):
    """A backed-up socket past max_outbound: the queue is dropped and the client closed (1013);
    nothing in that queue was written, so what expired there costs no number after recovery."""
    rig = rigs(impl)
    rig.conn.max_outbound = 200
    rig.send("one")
    rig.conn.pause()
    rig.send("stale", EXPIRED)
    rig.send("two")
    rig.send("x" * 300)  # over the limit: the queue is dropped
    rig.lose()
    assert rig.recover()
    assert rig.got() == [(1, "one"), (2, "two"), (3, "x" * 300)]


@IMPLEMENTATIONS
def test_a_resend_the_socket_broke_off_starts_over_and_keeps_what_it_wrote(impl, rigs):
    rig = rigs(impl)
    rig.lose()
    for text in ("one", "two", "three"):
        rig.send(text)
    rig.connect()
    rig.conn.discard_pending()
    rig.conn.mark_unsent()
    assert not rig.conn.resend_unacknowledged(0)  # stops after the first: the socket is "full"
    assert rig.got() == [(1, "one")]
    rig.send("stale", EXPIRED)  # numbered 4 while the resend is under way
    rig.lose()  # 1 was written to that socket: it may have it; 2 on were not
    rig.send("five")
    assert rig.recover()
    assert rig.got() == [(1, "one"), (2, "two"), (3, "three"), (4, "five")]


@IMPLEMENTATIONS
def test_a_full_buffer_makes_room_by_dropping_what_expired_while_away(impl, rigs):
    rig = rigs(impl)
    rig.conn.replay_max_messages = 3
    rig.lose()
    rig.send("one")
    for _ in range(5):
        rig.send("stale", EXPIRED)
    rig.send("two")
    rig.send("three")
    assert not rig.conn.replay_overflowed
    rig.send("four")  # the fourth live one: full
    assert rig.conn.replay_overflowed


@IMPLEMENTATIONS
def test_the_deadline_travels_with_a_handed_over_session(impl):
    """reliable.export_state carries deadlines on the wall clock; restore puts them back on the
    monotonic one (an expired one stays expired, in its place)."""
    from fastpush import reliable

    class Kept(impl.Connection):
        __slots__ = ("reconnection_token", "previous_token")

    old = Kept("c1", "ann", "h", "json.reliable.webpubsub.azure.v1", Variant.JSON_RELIABLE)
    old.reconnection_token = old.previous_token = None  # a handed-over state carries the two (fastpush.reliable)
    old.mark_unsent()  # its socket is gone (ClientSession.lost): nothing numbered after reaches one
    for text, deadline in (("stale", EXPIRED), ("live", time.monotonic() + 60), ("plain", NEVER)):
        impl.fanout((old,), impl.Frames(Payload(DataType.TEXT, text.encode()), ServerSource(), deadline))
    state = reliable.decode_state(reliable.export_state(old, None))
    assert state.unsent_from == 1
    new = Kept("c1", "ann", "h", "json.reliable.webpubsub.azure.v1", Variant.JSON_RELIABLE)
    reliable.restore(new, state, impl.Frames)
    stale, live, plain = new.replay
    now = time.monotonic()
    assert 0 < stale.deadline <= now and 59 < live.deadline - now <= 60 and plain.deadline == NEVER


# --- the clocks ------------------------------------------------------------------------------------
def test_an_expiry_on_the_wall_clock_becomes_a_deadline_on_the_monotonic_one():
    assert expires_at(0) == NEVER and local_deadline(NEVER) == NEVER and wall_time(NEVER) == NEVER
    deadline = local_deadline(expires_at(10))
    assert deadline is not None and 9 < deadline - time.monotonic() <= 10
    assert local_deadline(time.time() - 0.001) is None  # already expired: dropped on arrival
    assert abs(wall_time(time.monotonic() + 5) - (time.time() + 5)) < 0.1


def test_a_deadline_from_a_clock_far_ahead_is_clamped_to_the_longest_ttl():
    """A node whose clock runs ahead (or a forged operation) cannot keep a message for longer."""
    deadline = local_deadline(time.time() + 86_400)
    assert deadline is not None and deadline - time.monotonic() <= 300


# --- the hub: a message that arrives expired reaches nobody ---------------------------------------
def text(value: str) -> Payload:
    return Payload(DataType.TEXT, value.encode())


@pytest.mark.parametrize("make", [
    lambda e: fastpush_ops.SendToAll("chat", text("m"), expires_at=e),
    lambda e: fastpush_ops.SendToGroup("chat", "g", text("m"), expires_at=e),
    lambda e: fastpush_ops.SendToUser("chat", "ann", text("m"), expires_at=e),
    lambda e: fastpush_ops.SendToConnection("chat", "c1", text("m"), expires_at=e),
], ids=["all", "group", "user", "connection"])
def test_a_send_applied_after_its_expiry_reaches_no_one(make):
    hub = Hub("chat", RecordingRegistry())
    conn = FakeConnection("c1", "ann")
    hub.add_connection(conn, ["g"])
    hub.apply(make(time.time() - 0.5))
    assert conn.texts == []
    hub.apply(make(time.time() + 30))
    hub.apply(make(NEVER))
    assert conn.texts == ["m", "m"]
    live, plain = conn.replay
    assert 29 < live.deadline - time.monotonic() <= 30 and plain.deadline == NEVER
