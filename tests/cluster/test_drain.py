"""SIGTERM drains a server: what its clients, a REST caller and a late upgrade see, how long it may
take (--drain-timeout), and what a lone process without Redis does (nowhere to hand over). The
rolling restart of workers with the SDKs is tests/compat/test_client_sdk_drain.py."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import time

import jwt
import pytest
import websockets

from fastpush.app import DRAIN_REASON
from tests.cli_process import ServeProcess, WatchedServe
from tests.conftest import ACCESS_KEY
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url

KEY = {"FASTPUSH_ACCESS_KEY": ACCESS_KEY}
DRAIN_SECONDS = 5.0
EXIT_SECONDS = 15.0  # after the drain: the shutdown's own grace periods, and Python exiting


def _view(process: ServeProcess) -> ServerView:
    return ServerView(process.connection_string.split(";")[0].split("=", 1)[1], ACCESS_KEY)


def _token(view: ServerView, target: str) -> str:
    return jwt.encode({"aud": view.endpoint + target, "exp": int(time.time()) + 60}, ACCESS_KEY.encode(),
                      algorithm="HS256")


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _begun(view: ServerView, request_start: bytes) -> socket.socket:
    """An HTTP connection in the middle of its second request: a keep-alive request and the start
    of the next one in one write, so that by the time the first is answered the server has read
    (in the same callback) the start of the second."""
    sock = socket.create_connection(("127.0.0.1", view.port), timeout=10)
    sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{view.port}\r\n\r\n".encode() + request_start)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def _rest(view: ServerView, method: str, target: str) -> int:
    sock = socket.create_connection(("127.0.0.1", view.port), timeout=10)
    with sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{view.port}\r\n"
                     f"Authorization: Bearer {_token(view, target)}\r\nConnection: close\r\n\r\n".encode())
        return int(_read_all(sock).split(b" ", 2)[1])


def _events(process: WatchedServe, event: str) -> list[dict]:
    return [record for record in (json.loads(line) for line in process.lines() if line.startswith("{"))
            if record.get("event") == event]


async def test_drain_waits_for_a_session_nobody_takes_until_the_drain_timeout(redis_server):
    """A reliable client closed with 1012 that never comes back keeps its session waiting on the
    draining node, which another node could take: the node waits for it, answers what was already
    on its way, refuses what comes late, and exits 0 once --drain-timeout has passed."""
    hub = f"drain_{os.getpid()}"
    other = ServeProcess("--redis-url", redis_server.url, env=KEY)  # alive: the session could go there
    node = WatchedServe("--redis-url", redis_server.url, "--drain-timeout", str(DRAIN_SECONDS),
                        "--log-format", "json", env=KEY)
    try:
        view, other_view = _view(node), _view(other)
        ws = await websockets.connect(client_url(view, hub), subprotocols=[JSON_RELIABLE_V1])
        connection_id = json.loads(await ws.recv())["connectionId"]
        exists = f"/api/hubs/{hub}/connections/{connection_id}?api-version=2024-12-01"
        # Two connections with a request begun before the drain, finished during it.
        token = client_url(view, hub).split("access_token=")[1]
        late_upgrade = _begun(view, f"GET /client/hubs/{hub}?access_token={token} HTTP/1.1\r\n"
                                    f"Host: 127.0.0.1:{view.port}\r\n".encode())
        send = f"/api/hubs/{hub}/:send?api-version=2024-12-01"
        late_rest = _begun(view, f"POST {send} HTTP/1.1\r\nHost: 127.0.0.1:{view.port}\r\n"
                                 f"Authorization: Bearer {_token(view, send)}\r\n".encode())

        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (1012, DRAIN_REASON)

        with pytest.raises(ConnectionRefusedError):  # not listening: new clients go to other nodes
            socket.create_connection(("127.0.0.1", view.port), timeout=5).close()
        key = base64.b64encode(os.urandom(16)).decode()
        late_upgrade.sendall(f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                             f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        answer = await asyncio.to_thread(_read_all, late_upgrade)
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 503 ") and b"connection: close" in head.lower(), head
        assert json.loads(body) == {"code": "ServiceUnavailable", "message": DRAIN_REASON}
        late_rest.sendall(b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi")
        answer = await asyncio.to_thread(_read_all, late_rest)  # answered, then closed by the server
        assert answer.startswith(b"HTTP/1.1 202 ") and b"connection: close" in answer.lower(), answer

        assert node.proc.poll() is None  # still draining: the session waits for its client
        assert await asyncio.to_thread(_rest, other_view, "HEAD", exists) == 200
        code = await asyncio.to_thread(node.proc.wait, DRAIN_SECONDS + EXIT_SECONDS)
        assert code == 0 and time.monotonic() - started >= DRAIN_SECONDS
        [drained] = _events(node, "drained")
        assert drained["left"] == 1 and drained["seconds"] >= DRAIN_SECONDS, drained
        assert await asyncio.to_thread(_rest, other_view, "HEAD", exists) == 404  # gone with its node
        late_upgrade.close()
        late_rest.close()
    finally:
        for process in (node, other):
            if process.proc.poll() is None:
                process.stop(signal.SIGKILL)


async def test_one_process_without_redis_closes_everyone_with_1012_and_stops_without_waiting():
    """In memory there is no other node to take a session: SIGTERM closes every client with 1012
    at once (subprotocol clients read `disconnected` first) and the process exits, whatever
    --drain-timeout says. A reliable client's recovery then finds nothing listening; once a
    server listens there again it refuses the unknown session with 1008, and the SDK starts a
    new connection."""
    node = WatchedServe("--drain-timeout", "300", "--log-format", "json", env=KEY)
    view = _view(node)
    try:
        reliable = await websockets.connect(client_url(view, "solo"), subprotocols=[JSON_RELIABLE_V1])
        hello = json.loads(await reliable.recv())
        plain = await websockets.connect(client_url(view, "solo"), subprotocols=[JSON_V1])
        await plain.recv()
        raw = await websockets.connect(client_url(view, "solo"))

        node.proc.send_signal(signal.SIGTERM)
        for client in (reliable, plain):
            message = json.loads(await asyncio.wait_for(client.recv(), 10))
            assert message == {"type": "system", "event": "disconnected", "message": DRAIN_REASON}
        for client in (reliable, plain, raw):
            await client.wait_closed()
            assert (client.close_code, client.close_reason) == (1012, DRAIN_REASON)
        assert await asyncio.to_thread(node.proc.wait, EXIT_SECONDS) == 0
        recovery = client_url(view, "solo") + (f"&awps_connection_id={hello['connectionId']}"
                                               f"&awps_reconnection_token={hello['reconnectionToken']}")
        with pytest.raises(ConnectionRefusedError):
            await websockets.connect(recovery, subprotocols=[JSON_RELIABLE_V1])
    finally:
        if node.proc.poll() is None:
            node.stop(signal.SIGKILL)


async def test_a_second_sigterm_ends_the_drain_at_once(redis_server):
    other = ServeProcess("--redis-url", redis_server.url, env=KEY)
    node = WatchedServe("--redis-url", redis_server.url, "--drain-timeout", "300", "--log-format", "json", env=KEY)
    try:
        ws = await websockets.connect(client_url(_view(node), "hurry"), subprotocols=[JSON_RELIABLE_V1])
        await ws.recv()
        node.proc.send_signal(signal.SIGTERM)
        await ws.wait_closed()  # draining: its session waits for a client that will not come
        assert node.proc.poll() is None
        node.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(node.proc.wait, EXIT_SECONDS) == 0
        [drained] = _events(node, "drained")
        assert drained["left"] == 1
    finally:
        for process in (node, other):
            if process.proc.poll() is None:
                process.stop(signal.SIGKILL)


def test_sigint_stops_at_once_with_1001():
    node = WatchedServe("--drain-timeout", "300", env=KEY)

    async def scenario() -> None:
        client = await websockets.connect(client_url(_view(node), "solo"), subprotocols=[JSON_RELIABLE_V1])
        await client.recv()
        node.proc.send_signal(signal.SIGINT)
        await client.wait_closed()
        assert client.close_code == 1001
    try:
        asyncio.run(scenario())
        assert node.proc.wait(EXIT_SECONDS) == 0
    finally:
        if node.proc.poll() is None:
            node.stop(signal.SIGKILL)


def test_a_worker_that_dies_stops_the_others_and_a_stopped_one_is_replaced(redis_server):
    """The parent replaces a worker that stops cleanly on a signal of its own (SIGTERM: drains;
    SIGINT: at once), and stops everything, exit 1, when one dies."""
    serve = WatchedServe("--workers", "2", "--redis-url", redis_server.url, env=KEY)
    try:
        first, second = (int(p) for p in serve.wait_for(r"\(pids (\d+), (\d+)\)").groups())
        os.kill(first, signal.SIGINT)
        replacement = int(serve.wait_for(rf"worker {first} stopped; started worker (\d+) in its place").group(1))
        serve.wait_for(rf"worker {replacement} is serving")
        os.kill(second, signal.SIGKILL)
        assert serve.proc.wait(EXIT_SECONDS) == 1
        serve.wait_for(rf"worker {second} exited with code -9; stopping")
        with pytest.raises(ProcessLookupError):
            os.kill(replacement, 0)
    finally:
        if serve.proc.poll() is None:
            serve.stop(signal.SIGKILL)
