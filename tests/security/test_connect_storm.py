"""A storm of handshakes against a slow `connect` event handler (issue 14.2): never more connect
events under way than --max-upstream-connections, never more waiting than --max-upstream-waiting,
and every client either connected or refused at once with an HTTP status and a reason, instead of
all of them waiting until the upstream timeout."""
from __future__ import annotations

import asyncio
import base64
import json
import os
from urllib.parse import urlsplit

import pytest

import fastpush
from fastpush.config import Config, EventHandlerSettings, HubSettings
from fastpush.events.http_client import HttpBusy, HttpClient
from tests.helpers import ServerView, client_url, eventually
from tests.security.upstream_probe import Reply, UpstreamProbe

KEY = "connect-storm-access-key-0123456789abcdef"
HUB = "storm"
IN_FLIGHT = 4
WAITING = 8
CLIENTS = 40
UPSTREAM_DELAY = 1.5  # longer than it takes to open every client's socket, even on a busy machine
ANSWER_SECONDS = 12.0  # (IN_FLIGHT + WAITING) / IN_FLIGHT rounds of UPSTREAM_DELAY, and room to spare


async def _handshake(url: str) -> tuple[int, str]:
    """The upgrade's status, and for a refusal its body (the reason)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                     .encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        if status == 101:
            return status, ""
        length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                      if line.lower().startswith("content-length:"))
        return status, (await reader.readexactly(length)).decode()
    finally:
        writer.close()


@pytest.fixture
async def probe():
    up = UpstreamProbe(replies={"connect": Reply(204, delay=UPSTREAM_DELAY)})
    await up.start()
    yield up
    await up.stop()


@pytest.mark.timeout(30)
async def test_a_storm_against_a_slow_connect_handler_is_bounded_and_every_client_gets_an_answer(probe):
    handler = EventHandlerSettings(probe.url_template(), user_event_pattern="", system_events=["connect"])
    config = Config(hubs={HUB: HubSettings(event_handlers=[handler])}, upstream_timeout_seconds=20.0)
    async with fastpush.Server(port=0, access_key=KEY, config=config, max_upstream_connections=IN_FLIGHT,
                               max_upstream_waiting=WAITING) as server:
        view = ServerView.of(server)
        urls = [client_url(view, HUB, user_id=f"u{n}") for n in range(CLIENTS)]
        answers = await asyncio.wait_for(asyncio.gather(*(_handshake(u) for u in urls)), ANSWER_SECONDS)

    accepted = [a for a in answers if a[0] == 101]
    refused = [a for a in answers if a[0] != 101]
    assert probe.most_open_connections <= IN_FLIGHT
    # Those that found a connection or a place in the queue connected; the rest were refused.
    assert len(accepted) >= IN_FLIGHT + WAITING and refused, answers
    assert len(probe.posts("connect")) == len(accepted)  # a refused handshake never reached the upstream
    for status, body in refused:
        assert status == 503
        assert "connect event handler is busy" in json.loads(body)["message"], body


@pytest.mark.timeout(30)
async def test_the_queue_drains_and_later_clients_connect_again(probe):
    """The bound is on what waits now, not a budget: once the storm is served, a client connects."""
    probe.replies["connect"] = Reply(204, delay=0.3)
    handler = EventHandlerSettings(probe.url_template(), user_event_pattern="", system_events=["connect"])
    config = Config(hubs={HUB: HubSettings(event_handlers=[handler])}, upstream_timeout_seconds=20.0)
    async with fastpush.Server(port=0, access_key=KEY, config=config, max_upstream_connections=1,
                               max_upstream_waiting=1) as server:
        view = ServerView.of(server)
        first = await asyncio.wait_for(asyncio.gather(*(_handshake(client_url(view, HUB)) for _ in range(6))),
                                       ANSWER_SECONDS)
        assert sorted(status for status, _ in first)[:2] == [101, 101] and 503 in {s for s, _ in first}
        assert (await asyncio.wait_for(_handshake(client_url(view, HUB)), ANSWER_SECONDS))[0] == 101


@pytest.mark.timeout(30)
async def test_waiters_that_give_up_free_their_places(probe):
    """A cancelled wait (the client left, or its deadline passed) gives its place back: the count
    of waiting requests cannot creep up until every event is refused."""
    probe.replies["connect"] = Reply(204, delay=1.0)
    client = HttpClient(max_connections=1, max_waiting=2)
    origin = ("http", "127.0.0.1", probe.port)
    url = probe.url_template().replace("{hub}", HUB).replace("{event}", "connect")
    headers = {"ce-eventName": "connect"}
    try:
        first = asyncio.ensure_future(client.request("POST", url, headers, timeout=10))
        assert await eventually(lambda: len(probe.posts("connect")) == 1)  # it holds the one connection
        waiters = [asyncio.ensure_future(client.request("POST", url, headers, timeout=10)) for _ in range(2)]
        assert await eventually(lambda: client.waiting(origin) == 2)
        with pytest.raises(HttpBusy):
            await client.request("POST", url, headers, timeout=10)
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        assert client.waiting(origin) == 0
        assert (await asyncio.wait_for(first, 10)).status == 204
        assert (await client.request("POST", url, headers, timeout=10)).status == 204
        assert len(probe.posts("connect")) == 2  # the refused and the cancelled ones were never sent
    finally:
        await client.close()
