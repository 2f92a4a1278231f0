"""The log lines that tell what happened to a client: connect, disconnect, refusals (rate-limited),
and `--log-format json`."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import time

import pytest
import websockets

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from fastpush.logs import LINES_PER_SECOND
from tests.cli_process import ServeProcess
from tests.conftest import ACCESS_KEY
from tests.helpers import JSON_V1, ServerView, client_url, connect, eventually

BAD_HANDSHAKE = (b"GET /client/hubs/chat?access_token=not.a.token HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture
async def logged_server(caplog):
    caplog.set_level(logging.INFO, logger="fastpush")
    async with fastpush.Server(port=0, access_key=ACCESS_KEY) as running:
        yield running


def events(caplog, name: str, **fields) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name
            and all(getattr(r, key, None) == value for key, value in fields.items())]


async def test_connect_and_disconnect_lines_tell_the_clients_story(logged_server, caplog):
    client = await connect(ServerView(logged_server.endpoint, ACCESS_KEY), "story", JSON_V1, user_id="ann")
    [connected] = events(caplog, "connected", connection_id=client.connection_id)
    assert (connected.hub, connected.user, connected.subprotocol, connected.address) == \
        ("story", "ann", JSON_V1, "127.0.0.1")
    assert connected.levelno == logging.INFO and "ann" in connected.getMessage()
    sent = [json.dumps({"type": "event", "event": "e", "dataType": "text", "data": "x" * n, "ackId": n})
            for n in (1, 2, 3)]
    for n, text in enumerate(sent, 1):
        await client.ws.send(text)
        assert (await client.recv())["ackId"] == n
    await client.ws.close(code=4001, reason="bye")
    assert await eventually(lambda: events(caplog, "disconnected", connection_id=client.connection_id))
    [line] = events(caplog, "disconnected", connection_id=client.connection_id)
    assert (line.code, line.messages_in, line.bytes_in) == (4001, 3, sum(len(t.encode()) for t in sent))
    assert (line.hub, line.user, line.address) == ("story", "ann", "127.0.0.1")
    assert line.duration_s >= 0 and "4001" in line.getMessage()


async def test_a_server_close_and_a_lost_connection_have_their_codes(logged_server, caplog):
    view = ServerView(logged_server.endpoint, ACCESS_KEY)
    closed = await connect(view, "codes", JSON_V1)
    lost = await connect(view, "codes", JSON_V1)
    await logged_server.hub("codes").close_connection(closed.connection_id, reason="done here")
    lost.ws.transport.abort()
    assert await eventually(lambda: events(caplog, "disconnected", connection_id=closed.connection_id)
                            and events(caplog, "disconnected", connection_id=lost.connection_id))
    [by_server] = events(caplog, "disconnected", connection_id=closed.connection_id)
    assert (by_server.code, by_server.reason) == (1000, "done here")
    [dropped] = events(caplog, "disconnected", connection_id=lost.connection_id)
    assert dropped.code == 1006


async def test_a_refused_token_is_logged_with_the_address(logged_server, caplog):
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(logged_server.endpoint.replace("http", "ws") + "/client/hubs/chat?access_token=forged")
    [refused] = events(caplog, "refused")
    assert (refused.status, refused.address, refused.levelno) == (401, "127.0.0.1", logging.WARNING)
    assert refused.reason and "127.0.0.1" in refused.getMessage()


async def _bad_handshake(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(BAD_HANDSHAKE)
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:100]


async def test_a_flood_of_refusals_is_logged_a_few_lines_a_second_and_summed_up(logged_server, caplog):
    started = time.monotonic()
    for _ in range(20):
        await asyncio.gather(*(_bad_handshake(logged_server.port) for _ in range(50)))
    elapsed = time.monotonic() - started

    def accounted() -> int:
        return len(events(caplog, "refused")) + sum(r.suppressed for r in events(caplog, "suppressed"))
    assert await eventually(lambda: accounted() == 1000, 5.0), accounted()
    lines = events(caplog, "refused")
    # Each window of a second logs at most LINES_PER_SECOND refusals; the flood spans few windows.
    assert len(lines) <= LINES_PER_SECOND * (elapsed + 2)
    summaries = events(caplog, "suppressed", what="refused handshakes")
    assert summaries and "suppressed" in summaries[0].getMessage()


async def test_every_upstream_failure_is_logged_within_the_rate_limit(caplog):
    caplog.set_level(logging.INFO, logger="fastpush")
    with socket.socket() as closed:  # a port nothing listens on: every event fails at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    handler = EventHandlerSettings(f"http://127.0.0.1:{port}/up/{{event}}", user_event_pattern="*", system_events=[])
    config = Config(hubs={"up": HubSettings(event_handlers=[handler])})
    async with fastpush.Server(port=0, access_key=ACCESS_KEY, config=config) as server:
        client = await connect(ServerView(server.endpoint, ACCESS_KEY), "up", JSON_V1)
        started = time.monotonic()
        for _ in range(30):
            ack = await client.request({"type": "event", "event": "e", "dataType": "text", "data": "x"})
            assert ack["error"]["name"] == "InternalServerError", ack
        elapsed = time.monotonic() - started

        def accounted() -> int:
            return len(events(caplog, "upstream_failed")) + \
                sum(r.suppressed for r in events(caplog, "suppressed", what="upstream failures"))
        assert await eventually(lambda: accounted() == 30, 5.0), accounted()
        await client.close()
    lines = events(caplog, "upstream_failed")
    assert len(lines) <= LINES_PER_SECOND * (elapsed + 2)
    assert all((r.hub, r.connection_id, r.upstream_event) == ("up", client.connection_id, "e") for r in lines)
    assert lines[0].url == f"http://127.0.0.1:{port}/up/e"


def test_log_format_json_writes_one_object_per_line():
    serve = ServeProcess("--log-format", "json")
    fields = dict(part.split("=", 1) for part in serve.connection_string.rstrip(";").split(";"))

    async def one_client() -> str:
        view = ServerView(fields["Endpoint"], fields["AccessKey"])
        client = await connect(view, "jsonlog", JSON_V1, url=client_url(view, "jsonlog", user_id="jo"))
        await client.close()
        return client.connection_id

    try:
        connection_id = asyncio.run(one_client())
    finally:
        assert serve.stop(signal.SIGINT) == 0
    lines = [line for line in serve.output + serve.proc.stdout.read().splitlines()
             if line.strip() and not line.startswith(("Endpoint=", "Dashboard: "))]  # stdout's lines
    entries = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    [connected] = [e for e in entries if e.get("event") == "connected"]
    assert (connected["connection_id"], connected["user"], connected["address"], connected["level"]) == \
        (connection_id, "jo", "127.0.0.1", "INFO")
    [dashboard] = [e for e in entries if e.get("event") == "dashboard_url"]
    assert dashboard["url"].startswith(fields["Endpoint"] + "/dashboard/login?token=")
    [disconnected] = [e for e in entries if e.get("event") == "disconnected"]
    assert (disconnected["connection_id"], disconnected["code"], disconnected["messages_in"]) == \
        (connection_id, 1000, 0)
