"""Frame abuse by a connected client (issue 9, defects 2, 5, 8 and 9): every rule of RFC 6455 a
client can break is answered with its close code and a reason, no message outgrows the limit
however it is fragmented, and nothing one client sends keeps a broadcast from the others."""
from __future__ import annotations

import asyncio
import json
import logging
import struct
import time

import pytest
from picows import WSTransport

from fastpush import _fanout, _fanout_py
from fastpush.protocol.json_protocol import ServerSource
from fastpush.protocol.payload import DataType, Payload
from fastpush.protocol.variants import Variant
from tests.cli_process import ServeProcess
from tests.fanout.test_fanout_twins import CapturingTransport
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url, connect
from tests.metrics_client import Scraper, value
from tests.security.conftest import assert_still_serving, rss_bytes
from tests.security.rawws import BINARY, CONTINUATION, TEXT, RawWebSocket

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def served():
    """A real `fastpush serve` process (default limits: 1 MiB per message), for RSS measurements."""
    process = ServeProcess()
    yield process, ServerView.parse(process.connection_string)
    process.stop(2)


async def test_endless_fragments_close_1009_and_memory_stays_bounded(served):
    process, server = served
    scraper = Scraper(f"{server.endpoint}/metrics", server.access_key)
    closed_1009_before = value(await scraper.scrape(), "fastpush_disconnects_total", code="1009")
    before = rss_bytes(process.proc.pid)
    ws = await RawWebSocket.connect(client_url(server, "frag"))
    closed = asyncio.ensure_future(ws.close_frame(timeout=30))
    chunk = b"a" * (512 * 1024)
    ws.send(TEXT, chunk, fin=False)
    sent = 1
    try:
        while not closed.done() and sent < 128:  # 64 MiB if the server never stopped it
            ws.send(CONTINUATION, chunk, fin=False)
            await ws.drain()
            sent += 1
    except ConnectionError:
        pass
    try:
        frame = await closed
    except asyncio.IncompleteReadError:
        # On a starved machine this client may still be sending when the server, having sent its
        # 1009 and waited its close timeout, drops the socket with our bytes unread (a reset):
        # asyncio then discards what it had not read yet, the close frame with it. The server's
        # own count of closes by code still says which one it sent.
        await scraper.until(lambda s: value(s, "fastpush_disconnects_total", code="1009") > closed_1009_before)
    else:
        assert frame.close_code == 1009, frame
        assert "larger than 1048576 bytes" in frame.close_reason
    assert rss_bytes(process.proc.pid) - before < 24 * MiB
    ws.close()
    await assert_still_serving(server)


async def test_one_unfragmented_message_over_the_limit_closes_1009(served):
    _, server = served
    ws = await RawWebSocket.connect(client_url(server, "frag"))
    ws.send(BINARY, b"b" * (MiB + 1))
    frame = await ws.close_frame()
    assert frame.close_code == 1009, frame
    ws.close()


async def test_a_message_of_exactly_the_limit_in_fragments_is_accepted(served):
    _, server = served
    roles = ["webpubsub.sendToGroup.g"]
    url = client_url(server, "frag", roles=roles, groups=["g"]) + "&webpubsub_mode=sendToGroup&group=g"
    ws = await RawWebSocket.connect(url)
    quarter = b"q" * (MiB // 4)
    ws.send(BINARY, quarter, fin=False)
    for fin in (False, False, True):
        ws.send(CONTINUATION, quarter, fin=fin)
    echoed = await ws.recv(timeout=10)
    assert echoed.opcode == BINARY and len(echoed.payload) == MiB
    ws.close()


@pytest.mark.parametrize("rsv", [0b100, 0b010, 0b001])
async def test_reserved_bits_without_an_extension_close_1002(server, hub_name, rsv):
    ws = await RawWebSocket.connect(client_url(server, hub_name), JSON_V1)
    await ws.recv()  # connected
    ws.send(TEXT, b'{"type":"ping"}', rsv=rsv)
    frame = await ws.close_frame()
    assert frame.close_code == 1002 and "reserved bit" in frame.close_reason, frame
    ws.close()


@pytest.mark.parametrize("frames", [
    [(TEXT, b'{"type":', False), (TEXT, b'{"type":"ping"}', True)],  # a new message inside a fragmented one
    [(CONTINUATION, b"orphan", True)],  # a continuation without a first fragment
], ids=["new message mid-fragments", "orphan continuation"])
async def test_fragments_out_of_order_close_1002(server, hub_name, frames):
    ws = await RawWebSocket.connect(client_url(server, hub_name), JSON_V1)
    await ws.recv()
    for opcode, payload, fin in frames:
        ws.send(opcode, payload, fin=fin)
    frame = await ws.close_frame()
    assert frame.close_code == 1002 and "fragment" in frame.close_reason, frame
    ws.close()


async def test_invalid_utf8_from_a_raw_sender_closes_1007_and_reaches_nobody(server, hub_name):
    group = ["g"]
    raw_listener = await RawWebSocket.connect(client_url(server, hub_name, groups=group))
    json_listener = await connect(server, hub_name, JSON_V1, groups=group)
    send_url = client_url(server, hub_name, roles=["webpubsub.sendToGroup.g"]) + "&webpubsub_mode=sendToGroup&group=g"
    attacker = await RawWebSocket.connect(send_url)
    attacker.send(TEXT, b"bad \xff\xfe text")
    frame = await attacker.close_frame()
    assert frame.close_code == 1007, frame
    honest = await RawWebSocket.connect(send_url)
    honest.send(TEXT, "fine ✓".encode())
    got = await raw_listener.recv()
    assert got.opcode == TEXT and got.payload == "fine ✓".encode()  # the bad frame never came first
    message = await json_listener.recv()
    assert message["data"] == "fine ✓", message
    for ws in (raw_listener, attacker, honest):
        ws.close()
    await json_listener.close()


@pytest.mark.parametrize("impl", [_fanout, _fanout_py], ids=["compiled", "python"])
def test_one_failing_recipient_never_stops_a_broadcast(impl):
    """A recipient whose delivery raises (here: its filter) is counted and skipped; every other
    recipient, before and after it, gets the frame."""
    loop = asyncio.new_event_loop()
    captures, members = [], []
    for i in range(5):
        conn = impl.Connection(f"c{i}", None, "h", None, Variant.JSON)
        capture = CapturingTransport()
        conn.transport = WSTransport(False, capture, logging.getLogger("tests"), loop)
        captures.append(capture)
        members.append(conn)

    def predicate(conn) -> bool:
        if conn.connection_id == "c2":
            raise RuntimeError("a broken filter for one connection")
        return True

    before = impl.recipient_failures()
    frames = impl.Frames(Payload(DataType.TEXT, b"hello"), ServerSource())

    async def broadcast() -> int:
        return impl.fanout(members, frames, None, predicate)

    delivered = loop.run_until_complete(broadcast())
    assert delivered == 4
    assert impl.recipient_failures() == before + 1
    assert [b'"data":"hello"' in bytes(c.data) for c in captures] == [True, True, False, True, True]
    for capture in captures:
        capture.close()
    loop.close()


async def test_groups_per_connection_are_capped(make_server, hub_name):
    server = make_server(max_groups_per_connection=3)
    client = await connect(server, hub_name, JSON_V1, roles=["webpubsub.joinLeaveGroup"])
    for group in ("a", "b", "c"):
        assert (await client.request({"type": "joinGroup", "group": group}))["success"] is True
    refused = await client.request({"type": "joinGroup", "group": "d"})
    assert refused["success"] is False and refused["error"]["name"] == "BadRequest"
    assert "3 groups" in refused["error"]["message"]
    assert (await client.request({"type": "joinGroup", "group": "a"}))["success"] is True  # already a member
    assert (await client.request({"type": "leaveGroup", "group": "b"}))["success"] is True
    assert (await client.request({"type": "joinGroup", "group": "d"}))["success"] is True
    await client.close()
    await assert_still_serving(server)


async def test_a_non_ascii_reconnection_token_is_refused_with_1008(server, hub_name):
    client = await connect(server, hub_name, JSON_RELIABLE_V1)
    url = (f"ws://127.0.0.1:{server.port}/client/hubs/{hub_name}?awps_connection_id={client.connection_id}"
           f"&awps_reconnection_token=%C3%A9t%C3%A9")
    ws = await RawWebSocket.connect(url, JSON_RELIABLE_V1)
    frame = await ws.close_frame()
    assert frame.close_code == 1008 and "token" in frame.close_reason, frame
    ws.close()
    await client.close()
    await assert_still_serving(server)


async def test_a_slow_client_sees_its_1013_close_ahead_of_the_backlog(make_server, hub_name):
    """The client reads nothing while messages are pushed; when it reads again it gets what the
    kernel's socket buffers held, then its 1013 close frame: the backlog queued beyond them was
    dropped in front of the close frame (it used to be queued behind 4 MiB and then reset)."""
    server = make_server(max_outbound_bytes=MiB)
    slow = await RawWebSocket.connect(client_url(server, hub_name))
    slow.writer.transport.pause_reading()
    hub = server.server.hub(hub_name)
    chunk = "x" * (64 * 1024)
    pushed = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        server.call(hub.send_to_all, chunk, content_type="text/plain")
        pushed += len(chunk)
        if not server.call(lambda: any(c.is_open for c in hub._hub.connections)):
            break  # this push closed the slow client
        await asyncio.sleep(0)
    slow.writer.transport.resume_reading()
    received = 0
    while True:
        frame = await slow.recv(timeout=10)
        if frame.opcode == 0x8:
            break
        received += len(frame.payload)
    assert struct.unpack("!H", frame.payload[:2])[0] == 1013
    assert pushed - received >= MiB, (pushed, received)  # the queued backlog was not delivered
    slow.close()
    await assert_still_serving(server)


async def test_sessions_waiting_for_recovery_count_against_the_connection_cap(make_server, hub_name):
    """Connect-and-drop reliable clients leave sessions (memory, no socket) for the recovery window:
    they count against max_connections, so churn cannot pile them up; recovering one still works."""
    server = make_server(max_connections=3)
    hellos = []
    for _ in range(3):
        ws = await RawWebSocket.connect(client_url(server, hub_name), JSON_RELIABLE_V1)
        hellos.append(json.loads((await ws.recv()).payload))
        ws.writer.transport.abort()  # gone without a close frame: the session waits for recovery
    hub = server.server.node.hub(hub_name)
    deadline = time.monotonic() + 10
    while any(c.is_open for c in hub.tables.connections.values()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    with pytest.raises(ConnectionError, match="503"):
        await RawWebSocket.connect(client_url(server, hub_name), JSON_RELIABLE_V1)
    hello = hellos[0]
    url = (f"ws://127.0.0.1:{server.port}/client/hubs/{hub_name}?awps_connection_id={hello['connectionId']}"
           f"&awps_reconnection_token={hello['reconnectionToken']}")
    back = await RawWebSocket.connect(url, JSON_RELIABLE_V1)
    assert b'"connected"' in (await back.recv()).payload
    back.close()


async def test_frames_picows_refuses_close_1002_without_an_error_in_the_log(server, hub_name, caplog):
    """An unknown opcode and an unmasked frame are refused by picows' parser: 1002, logged at DEBUG."""
    for bad in (bytes([0x83, 0x80]) + b"\0\0\0\0", bytes([0x81, 0x02]) + b"hi"):
        ws = await RawWebSocket.connect(client_url(server, hub_name), JSON_V1)
        await ws.recv()
        with caplog.at_level(logging.DEBUG, logger="fastpush"):
            ws.writer.write(bad)
            frame = await ws.close_frame()
        assert frame.close_code == 1002, frame
        ws.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records
    assert any("WS parser error" in r.getMessage() for r in caplog.records)
