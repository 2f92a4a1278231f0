"""The official @azure/web-pubsub-express middleware (an Express app started by the test) as the
real upstream: connect sets userId and groups, connected and disconnected arrive, a user event's
reply reaches the client, a rejected connect fails the handshake with the handler's status."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest
import websockets

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from tests.helpers import JSON_V1, ServerView, client_url, connect

JS = Path(__file__).parents[1] / "compat" / "js"
HUB = "expresschat"


class ExpressApp:
    def __init__(self, process):
        self.process = process
        self.lines: list[dict] = []

    async def read_until(self, predicate, timeout: float = 10.0) -> dict:
        async def scan():
            for line in self.lines:
                if predicate(line):
                    return line
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"the express app ended; it said: {self.lines}")
                line = json.loads(raw)
                self.lines.append(line)
                if predicate(line):
                    return line
        return await asyncio.wait_for(scan(), timeout)


@contextlib.asynccontextmanager
async def running_express_app():
    """The express app in its own node process, for as long as the block runs."""
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "@azure" / "web-pubsub-express").is_dir():
        pytest.fail(f"node and @azure/web-pubsub-express are needed: run npm ci in {JS}")
    process = await asyncio.create_subprocess_exec(node, str(JS / "express_upstream.mjs"), HUB, cwd=JS,
                                                   stdout=asyncio.subprocess.PIPE, env=dict(os.environ))
    try:
        app = ExpressApp(process)
        app.listening = await app.read_until(lambda line: "listening" in line)
        yield app
    finally:
        process.kill()
        await process.wait()


@pytest.fixture
async def express_app():
    async with running_express_app() as app:
        yield app


@pytest.fixture
async def server(express_app):
    handler = EventHandlerSettings(
        f"http://127.0.0.1:{express_app.listening['listening']}{express_app.listening['path']}{{event}}",
        user_event_pattern="*", system_events=["connect", "connected", "disconnected"])
    async with fastpush.Server(port=0, config=Config(hubs={HUB: HubSettings(event_handlers=[handler])})) as srv:
        yield srv


async def test_express_middleware_drives_the_connection(server, express_app):
    client = await connect(ServerView.of(server), HUB, JSON_V1, user_id="token-user")
    assert client.user_id == "express-user"
    connect_seen = await express_app.read_until(lambda line: line.get("event") == "connect")
    assert connect_seen["claims"]["sub"] == ["token-user"] and connect_seen["subprotocols"] == [JSON_V1]
    connected = await express_app.read_until(lambda line: line.get("event") == "connected")
    assert connected == {"event": "connected", "connectionId": client.connection_id, "userId": "express-user"}

    await server.hub(HUB).send_to_group("express-group", "group push", content_type="text/plain")
    assert (await client.recv())["data"] == "group push"  # in the group the middleware chose
    ack = await client.request({"type": "sendToGroup", "group": "express-group", "dataType": "text", "data": "mine"})
    assert ack["success"] is True  # with the role the middleware gave
    assert (await client.recv())["data"] == "mine"

    await client.send({"type": "event", "event": "hello", "dataType": "text", "data": "world", "ackId": 7})
    assert await client.recv() == {"type": "message", "from": "server", "dataType": "text", "data": "echo:world"}
    assert (await client.recv())["ackId"] == 7
    user_event = await express_app.read_until(lambda line: line.get("event") == "user")
    assert user_event["name"] == "hello" and user_event["data"] == "world" and user_event["state"] == {"visits": 1}
    await client.send({"type": "event", "event": "again", "dataType": "text", "data": "x", "ackId": 8})
    await client.recv(), await client.recv()
    again = await express_app.read_until(lambda line: line.get("event") == "user" and line["name"] == "again")
    assert again["state"] == {"visits": 2}  # ce-connectionState round-trips

    await client.close()
    disconnected = await express_app.read_until(lambda line: line.get("event") == "disconnected")
    assert disconnected["connectionId"] == client.connection_id


async def test_express_rejection_fails_the_handshake(server, express_app):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(client_url(ServerView.of(server), HUB) + "&reject=1")
    assert refused.value.response.status_code == 401
