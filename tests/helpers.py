"""Client-side helpers for tests: raw and JSON-subprotocol WebSocket clients built on `websockets`."""
from __future__ import annotations

import asyncio
import http.client
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import websockets

JSON_V1 = "json.webpubsub.azure.v1"
JSON_RELIABLE_V1 = "json.reliable.webpubsub.azure.v1"
RECEIVE_TIMEOUT = 5.0


@dataclass(frozen=True)
class ServerView:
    """What the helpers need to know about a server: where it listens and its access key (and,
    for a server in this process, the server itself)."""

    endpoint: str
    access_key: str
    server: Any = None

    @classmethod
    def of(cls, server: Any) -> ServerView:
        """The view of a fastpush.Server running in this process."""
        return cls(server.endpoint, server.keyring.primary, server)

    @classmethod
    def parse(cls, connection_string: str) -> ServerView:
        """The view of a server by its connection string (`Endpoint=...;AccessKey=...;...`)."""
        fields = dict(part.split("=", 1) for part in connection_string.split(";") if part)
        return cls(fields["Endpoint"], fields["AccessKey"])

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])


def client_token(key: str, endpoint: str, hub: str, *, user_id=None, roles=None, groups=None,
                 expires_in: int = 3600, **extra) -> str:
    claims = {"aud": f"{endpoint}/client/hubs/{hub}", "exp": int(time.time()) + expires_in, **extra}
    if user_id is not None:
        claims["sub"] = user_id
    if roles is not None:
        claims["role"] = roles
    if groups is not None:
        claims["webpubsub.group"] = groups
    return jwt.encode(claims, key.encode(), algorithm="HS256")


def client_url(server, hub: str, **claims) -> str:
    token = client_token(server.access_key, server.endpoint, hub, **claims)
    return "ws" + server.endpoint[4:] + f"/client/hubs/{hub}?access_token={token}"


class Client:
    """A connected test client: `recv()` returns the next frame (str or bytes), JSON-decoded for JSON clients."""

    def __init__(self, ws, subprotocol: str | None):
        self.ws = ws
        self.subprotocol = subprotocol
        self.connection_id: str | None = None
        self.user_id: str | None = None
        self.reconnection_token: str | None = None  # reliable subprotocols
        self._ack_id = 0
        self._pending: list = []  # messages that arrived while request() waited for its ack

    async def recv(self, timeout: float = RECEIVE_TIMEOUT):
        if self._pending:
            return self._pending.pop(0)
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        if self.subprotocol and isinstance(frame, str):
            return json.loads(frame)
        return frame

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            frame = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected no message, got {frame!r}")

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def request(self, message: dict) -> dict:
        """Send a message with a fresh ackId and return its ack."""
        self._ack_id += 1
        await self.send({**message, "ackId": self._ack_id})
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), RECEIVE_TIMEOUT)
            reply = json.loads(frame)
            if reply.get("type") == "ack" and reply.get("ackId") == self._ack_id:
                return reply
            self._pending.append(reply)

    async def close(self) -> None:
        await self.ws.close()


async def connect(server, hub: str, subprotocol: str | None = None, *, url: str | None = None, ssl=None,
                  **claims) -> Client:
    """Open a client (wss when `ssl` is an SSLContext); JSON clients have read their connected message."""
    ws = await websockets.connect(url or client_url(server, hub, **claims), ssl=ssl,
                                  subprotocols=[subprotocol] if subprotocol else None, max_size=None)
    client = Client(ws, subprotocol)
    if subprotocol:
        hello = await client.recv()
        assert hello["type"] == "system" and hello["event"] == "connected", hello
        client.connection_id = hello["connectionId"]
        client.user_id = hello.get("userId")
        client.reconnection_token = hello.get("reconnectionToken")
    return client


async def eventually(condition: Callable[[], object], seconds: float = 10.0) -> bool:
    """Poll `condition()` (plain or async) until it holds or `seconds` pass; whether it held.

    For state that changes a little after the event a test caused: wait for it, never sample it."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result or time.monotonic() > deadline:
            return bool(result)
        await asyncio.sleep(0.02)


def publish_numbered(server, hub: str, count: int, stop: list, rate: float) -> None:
    """The numbers from 0 to count - 1 as text/plain to the hub through REST, one at a time on one
    keep-alive connection, no faster than `rate` a second, until `stop` holds something; each must
    be accepted (202). Blocking: run it in a thread (asyncio.to_thread)."""
    target = f"/api/hubs/{hub}/:send?api-version=2024-12-01"
    token = jwt.encode({"aud": server.endpoint + f"/api/hubs/{hub}/:send", "exp": int(time.time()) + 600},
                       server.access_key.encode(), algorithm="HS256")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    started = time.monotonic()
    try:
        for n in range(count):
            if stop:
                return
            conn.request("POST", target, body=str(n),
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
            response = conn.getresponse()
            response.read()
            assert response.status == 202, response.status
            ahead = started + (n + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    finally:
        conn.close()
