"""A Live Trace watcher that does not read costs the server a bounded buffer, never more: its
lines are counted as dropped, and it is told how many once it reads again. Nothing is recorded
while nobody watches."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

import pytest

from fastpush.dashboard.watcher import WATCHER_BUFFER_BYTES
from fastpush.trace import MAX_RECORDS_PER_TURN, Trace
from tests.dashboard_client import Dashboard
from tests.helpers import JSON_V1, connect, eventually
from tests.security.conftest import assert_still_serving

pytestmark = pytest.mark.timeout(120)

EVENTS = 20_000
PAD = "x" * 1000
# What one batch can add past the high-water mark: its records, each clipped (texts to 300
# characters, the payload's preview to 1 KiB), JSON-encoded.
BATCH_BOUND = MAX_RECORDS_PER_TURN * 2048


def _frame(payload: bytes) -> bytes:
    """One masked client text frame."""
    mask = os.urandom(4)
    size = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | size) if size < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return first & 0x0F, await reader.readexactly(size)


async def _stalled_watcher(server, cookie: str):
    """A Live Trace socket with a tiny receive buffer, which then reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /dashboard/trace HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Origin: {server.endpoint}\r\nCookie: {cookie}\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(_frame(json.dumps({"payloads": True, "kinds": ["message"]}).encode()))
    return reader, writer


def _watcher_state(server) -> tuple[int, int]:
    """(bytes its socket's transport holds, lines counted as dropped) of the one watcher."""
    (watcher,) = server.server.dashboard.watchers
    return watcher.transport.underlying_transport.get_write_buffer_size(), watcher.dropped


async def test_a_watcher_that_does_not_read_loses_lines_not_memory(make_server):
    server = make_server()
    user = Dashboard(server.endpoint)
    await asyncio.to_thread(user.login, await server.acall(server.server.dashboard.login_url))
    reader, writer = await _stalled_watcher(server, user.cookie)
    assert await eventually(lambda: server.server.trace.payloads)
    client = await connect(server, "busy", JSON_V1)
    largest = 0
    try:
        for i in range(EVENTS):
            await client.send({"type": "event", "event": "e", "dataType": "text", "data": PAD, "ackId": i + 1})
            if i % 1000 == 999:
                largest = max(largest, (await server.acall(_watcher_state, server))[0])
        assert await eventually(lambda: server.call(_watcher_state, server)[1] > 0)
        held, dropped = await server.acall(_watcher_state, server)
        print(f"\nwatcher buffer: at most {largest} bytes seen, {held} now; {dropped} lines dropped")
        assert max(largest, held) <= WATCHER_BUFFER_BYTES + BATCH_BOUND
        # Reading again: the lost lines are told (the first batch after the drain says how many).
        told = 0
        while not told:
            opcode, payload = await asyncio.wait_for(_read_frame(reader), 20)
            assert opcode == 0x1
            told = json.loads(payload)["dropped"]  # each frame whole: framing survives the backlog
        assert told > 0
    finally:
        await client.close()
        writer.close()
    await assert_still_serving(server)


async def test_nothing_is_recorded_while_nobody_watches(make_server, monkeypatch):
    """The trace is told nothing without a receiving watcher: its `tell` would raise if it were."""
    server = make_server()
    trace = server.server.trace
    told = []
    monkeypatch.setattr(Trace, "tell", lambda self, *args, **kwargs: told.append(args))
    client = await connect(server, "quiet", JSON_V1, roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"])
    assert (await client.request({"type": "joinGroup", "group": "g"}))["success"] is True
    await client.send({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "hi"})
    assert (await client.recv())["data"] == "hi"
    await server.acall(server.server.hub("quiet").send_to_all, "rest-free")
    await client.close()
    # A paused watcher receives nothing, so it does not switch recording on either.
    user = Dashboard(server.endpoint)
    await asyncio.to_thread(user.login, await server.acall(server.server.dashboard.login_url))
    ws = await asyncio.to_thread(user.trace, paused=True)
    assert await eventually(lambda: server.server.trace.watchers == 1 and not trace.active)
    second = await connect(server, "quiet", JSON_V1)
    await second.close()
    await asyncio.to_thread(ws.close)
    assert not trace.active
    assert told == []
