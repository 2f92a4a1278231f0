"""The embedding API: a server inside the test's own event loop, sends without HTTP, clean stop."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop
import websockets

import fastpush
from tests.helpers import JSON_V1, ServerView, client_url, connect, eventually
from tests.security.rawws import RawWebSocket

EXAMPLE = Path(__file__).parents[2] / "examples" / "embedded_ticker.py"


pytestmark = pytest.mark.both_loops  # the embedding API promises asyncio and uvloop: each test runs on both


async def test_embedded_server_sends_and_manages_groups():
    async with fastpush.Server(port=0) as server:
        hub = server.hub("embedded")
        client = await connect(ServerView.of(server), "embedded", JSON_V1, user_id="ann")
        raw = await connect(ServerView.of(server), "embedded")
        await hub.send_to_all("to all", content_type="text/plain")
        assert (await client.recv())["data"] == "to all"
        assert await raw.recv() == "to all"
        assert await hub.add_connection_to_group("g", client.connection_id)
        assert not await hub.add_connection_to_group("g", "no-such-connection")
        assert await hub.group_exists("g") and await hub.user_exists("ann")
        assert await hub.connection_exists(client.connection_id)
        assert not await hub.group_exists("h") and not await hub.user_exists("bob")
        await hub.send_to_group("g", {"n": 1})
        assert (await client.recv())["data"] == {"n": 1}
        await hub.send_to_user("ann", b"\x01", filter="userId eq 'ann'")
        assert (await client.recv())["dataType"] == "binary"
        assert await hub.list_connections("g") == [{"connectionId": client.connection_id, "userId": "ann"}]
        assert await hub.grant_permission("sendToGroup", client.connection_id, target_name="g")
        assert await hub.has_permission("sendToGroup", client.connection_id, target_name="g")
        assert not await hub.has_permission("sendToGroup", client.connection_id, target_name="other")
        await hub.close_connection(client.connection_id, reason="done")
        assert (await client.recv())["message"] == "done"
        with pytest.raises(ValueError):
            await hub.send_to_group(" ", "x")
        with pytest.raises(ValueError):
            await hub.send_to_all("x", filter="userId eq")
    # Stopped: the port is free again and the raw client was closed with a close frame.
    with pytest.raises(websockets.ConnectionClosedOK):
        await raw.ws.recv()
    with socket.socket() as probe:  # with SO_REUSEADDR, bind fails only while something listens
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))


async def test_the_server_runs_on_the_loop_it_is_embedded_in(request):
    async with fastpush.Server(port=0) as server:
        client = await connect(ServerView.of(server), "loop", JSON_V1)
        await server.hub("loop").send_to_all("on this loop", content_type="text/plain")
        assert (await client.recv())["data"] == "on this loop"
    expected = uvloop.Loop if "uvloop" in request.node.name else asyncio.BaseEventLoop
    assert isinstance(asyncio.get_running_loop(), expected), request.node.name


async def test_stop_leaves_no_task_behind():
    before = set(asyncio.all_tasks())
    server = await fastpush.Server(port=0).start()
    client = await connect(ServerView.of(server), "h", JSON_V1)
    await server.stop()
    assert await eventually(lambda: set(asyncio.all_tasks()) == before, 5), set(asyncio.all_tasks()) - before
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.ws.recv()
    assert closed.value.rcvd.code == 1001


def test_example_runs():
    result = subprocess.run([sys.executable, str(EXAMPLE), "1"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "connection string: Endpoint=http://127.0.0.1:" in result.stdout and "stopped cleanly" in result.stdout


async def test_a_burst_in_one_loop_turn_arrives_whole_and_in_order():
    """Sends made in one turn are coalesced into fewer writes; nothing is lost or reordered,
    and an ack that follows them stays behind them."""
    async with fastpush.Server(port=0) as server:
        view = ServerView.of(server)
        raw = await connect(view, "burst")
        reliable = await connect(view, "burst", "json.reliable.webpubsub.azure.v1",
                                 roles=["webpubsub.sendToGroup"], groups=["g"])
        hub = server.hub("burst")
        for n in range(500):  # each send completes without suspending: one loop turn
            await hub.send_to_all(str(n), content_type="text/plain")
        assert [await raw.recv() for _ in range(500)] == [str(n) for n in range(500)]
        got = [await reliable.recv() for _ in range(500)]
        assert [m["sequenceId"] for m in got] == list(range(1, 501))
        await reliable.send({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "last", "ackId": 1})
        assert (await reliable.recv())["data"] == "last"
        assert (await reliable.recv())["type"] == "ack"


async def test_bursts_of_frames_of_every_size_arrive_byte_for_byte():
    """A turn's frames leave in one writev() of frames of every size, across the 126- and
    65,536-byte header boundaries, more than the socket takes at once (the rest goes to the
    transport); the next turn starts over. Every frame arrives whole and in order."""
    sizes = [1, 125, 126, 127, 1000, 4000, 65535, 65536, 70000, 3, 900, 20000, 2]
    async with fastpush.Server(port=0) as server:
        view = ServerView.of(server)
        raw = await connect(view, "sizes")
        hub = server.hub("sizes")
        for turn in range(3):
            texts = [chr(ord("a") + (turn + i) % 26) * size for i, size in enumerate(sizes)]
            for text in texts:  # one loop turn: one writev() at its end
                await hub.send_to_all(text, content_type="text/plain")
            assert [await raw.recv() for _ in texts] == texts


async def test_a_burst_the_socket_cannot_take_waits_and_arrives_in_order():
    """A client that stops reading, behind a small send buffer: a turn's 3 MB leave in a
    writev() the socket takes only part of; the rest goes to the transport, which pauses the
    connection; the next turn's sends are held in its own queue and follow once the client reads
    again. Nothing lost or reordered."""
    async with fastpush.Server(port=0) as server:
        view = ServerView.of(server)
        reader = await RawWebSocket.connect(client_url(view, "stall"))
        reader.writer.transport.pause_reading()
        conn = next(iter(server.node.hub("stall").tables.connections.values()))
        # a small send buffer (the kernel would otherwise let it grow to megabytes)
        conn.transport.underlying_transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        hub = server.hub("stall")
        first = [f"{n:05d}".ljust(1000, "x") for n in range(3000)]
        for text in first:  # one loop turn
            await hub.send_to_all(text, content_type="text/plain")
        assert await eventually(lambda: conn.paused)
        later = [f"later {n}" for n in range(10)]
        for text in later:
            await hub.send_to_all(text, content_type="text/plain")
        assert conn.queued_bytes == sum(len(text) + 2 for text in later)  # held in its own queue
        reader.writer.transport.resume_reading()
        got: list[str] = []
        while len(got) < 3010:
            frame = await reader.recv(timeout=10)
            if frame.opcode == 0x1:  # not a heartbeat's ping
                got.append(frame.payload.decode())
        assert got == first + later
        reader.close()
