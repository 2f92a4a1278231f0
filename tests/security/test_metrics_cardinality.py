"""Clients and callers choose hub names, close codes, event names and URLs; none of them can make
/metrics grow a series per value: hubs past the cap are summed under one label, and every other
label takes its value from a short fixed list."""
from __future__ import annotations

import asyncio
import json
import uuid

import websockets

from fastpush.config import Config, EventHandlerSettings, HubSettings
from fastpush.metrics.collector import MAX_HUB_LABELS, OTHER_HUBS
from tests.conftest import ACCESS_KEY
from tests.events.upstream_server import Upstream
from tests.helpers import JSON_V1, client_url, connect
from tests.metrics_client import Scraper, get, series, value
from tests.security.conftest import assert_still_serving

GAUGES_BY_HUB = ("fastpush_reliable_sessions_waiting", "fastpush_replay_buffer_messages",
                 "fastpush_replay_buffer_bytes", "fastpush_groups", "fastpush_users")


def _labels(samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for labels in series(samples, name)}


async def test_hubs_past_the_cap_share_one_label(make_server):
    server = make_server()
    extra = 30
    names = [f"hub{i:03d}" for i in range(MAX_HUB_LABELS + extra)]
    clients = [await websockets.connect(client_url(server, name)) for name in names]
    try:
        scraper = Scraper(server.endpoint + "/metrics", ACCESS_KEY)
        samples = await scraper.until(
            lambda s: sum(series(s, "fastpush_connections").values()) == len(names))
        hubs = _labels(samples, "fastpush_connections", "hub")
        # Equally connected hubs are labelled in name order: the first MAX_HUB_LABELS, then the rest as one.
        assert hubs == {*names[:MAX_HUB_LABELS], OTHER_HUBS}
        assert value(samples, "fastpush_connections", hub=OTHER_HUBS, subprotocol="raw") == extra
        for name in GAUGES_BY_HUB:
            assert _labels(samples, name, "hub") == hubs, name
        assert value(samples, "fastpush_hubs") == len(names)
    finally:
        for client in clients:
            await client.close()
    await assert_still_serving(server)


async def test_close_codes_a_client_chooses_are_one_label(make_server):
    server = make_server()
    scraper = Scraper(server.endpoint + "/metrics", ACCESS_KEY)
    before = await scraper.scrape()
    codes = [*range(3000, 3020), *range(4000, 4020), 4999]
    for code in codes:
        client = await websockets.connect(client_url(server, "closers"))
        await client.close(code=code)
    others = value(before, "fastpush_disconnects_total", code="other") + len(codes)
    samples = await scraper.until(lambda s: value(s, "fastpush_disconnects_total", code="other") == others)
    assert _labels(samples, "fastpush_disconnects_total", "code") <= {*map(str, range(1000, 1016)), "other"}
    await assert_still_serving(server)


async def test_user_event_names_and_unknown_routes_are_one_label_each(make_server):
    upstream = Upstream([ACCESS_KEY])
    handler = EventHandlerSettings(upstream.url_template(), user_event_pattern="*")
    server = make_server(config=Config(hubs={"events": HubSettings(event_handlers=[handler])}))
    try:
        scraper = Scraper(server.endpoint + "/metrics", ACCESS_KEY)
        before = await scraper.scrape()
        client = await connect(server, "events", JSON_V1)
        names = [f"e{uuid.uuid4().hex[:12]}" for _ in range(25)]
        for name in names:
            ack = await client.request({"type": "event", "event": name, "dataType": "text", "data": "x"})
            assert ack["success"] is True, ack
        await client.close()
        for i in range(25):
            assert (await asyncio.to_thread(get, f"{server.endpoint}/api/nothing/{uuid.uuid4().hex}/{i}")).status == 404
        user_ok = value(before, "fastpush_upstream_events_total", event="user", outcome="ok") + len(names)
        unknown = value(before, "fastpush_rest_requests_total", operation="unknown", status="404") + 25
        samples = await scraper.until(
            lambda s: value(s, "fastpush_upstream_events_total", event="user", outcome="ok") == user_ok
            and value(s, "fastpush_rest_requests_total", operation="unknown", status="404") == unknown)
        assert _labels(samples, "fastpush_upstream_events_total", "event") <= {"connect", "connected", "disconnected",
                                                                                "user"}
        assert _labels(samples, "fastpush_upstream_event_duration_seconds_count", "event") <= \
            {"connect", "connected", "disconnected", "user"}
        operations = _labels(samples, "fastpush_rest_requests_total", "operation")
        assert not any(name in json.dumps(sorted(operations)) for name in names)
        assert all(not operation.startswith("/") for operation in operations)
    finally:
        upstream.close()
    await assert_still_serving(server)
