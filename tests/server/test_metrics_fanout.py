"""The fan-out's own counters, scraped, against what the clients received, byte for byte: a burst
made in one loop turn leaves in one direct write and one coalesced write per member; an isolated
send in one direct write. And the hubs' gauges against what the server holds: connections per
subprotocol, reliable sessions waiting, their replay buffers.

The server runs in the test's loop (so a burst of embedding-API sends is one loop turn); the
counters are the process's, so each check compares two scrapes around what it did."""
from __future__ import annotations

import asyncio
import json

import websockets

import fastpush
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url
from tests.metrics_client import Scraper, value

COUNTERS = ("fastpush_broadcasts_total", "fastpush_deliveries_total", "fastpush_sent_bytes_total",
            "fastpush_coalesced_frames_total", "fastpush_fanout_duration_seconds_count")


def _delta(after, before) -> dict[str, float]:
    names = {name: value(after, name) - value(before, name) for name in COUNTERS}
    for mode in ("direct", "coalesced"):
        names[mode] = (value(after, "fastpush_socket_writes_total", mode=mode)
                       - value(before, "fastpush_socket_writes_total", mode=mode))
    return names


def _raw_frame_size(payload: bytes) -> int:
    return len(payload) + (2 if len(payload) < 126 else 4 if len(payload) < 65536 else 10)


async def _read(ws, count: int) -> list[bytes]:
    return [(await asyncio.wait_for(ws.recv(), 10)).encode() for _ in range(count)]


async def test_a_burst_is_one_coalesced_write_per_member():
    async with fastpush.Server(port=0) as server:
        view = ServerView.of(server)
        scraper = Scraper(server.endpoint + "/metrics", server.keyring.primary)
        clients = [await websockets.connect(client_url(view, "burst")) for _ in range(3)]
        hub = server.hub("burst")
        payloads = [f"message {i:03d} ".encode() * (i % 7 + 1) for i in range(50)]

        before = await scraper.scrape()
        for payload in payloads:  # no await suspends: one loop turn
            await hub.send_to_all(payload.decode(), content_type="text/plain")
        received = [await _read(ws, len(payloads)) for ws in clients]
        after = await scraper.scrape()

        assert received == [payloads] * 3
        frame_bytes = sum(_raw_frame_size(p) for p in payloads)
        assert _delta(after, before) == {
            "fastpush_broadcasts_total": 50, "fastpush_deliveries_total": 150,
            "fastpush_sent_bytes_total": 3 * frame_bytes, "fastpush_coalesced_frames_total": 3 * 49,
            "fastpush_fanout_duration_seconds_count": 50, "direct": 0, "coalesced": 3}

        before = after
        await hub.send_to_all("alone", content_type="text/plain")
        assert [await _read(ws, 1) for ws in clients] == [[b"alone"]] * 3
        after = await scraper.scrape()
        assert _delta(after, before) == {
            "fastpush_broadcasts_total": 1, "fastpush_deliveries_total": 3,
            "fastpush_sent_bytes_total": 3 * _raw_frame_size(b"alone"), "fastpush_coalesced_frames_total": 0,
            "fastpush_fanout_duration_seconds_count": 1, "direct": 3, "coalesced": 0}
        for ws in clients:
            await ws.close()


async def test_the_hub_gauges_count_what_the_server_holds():
    async with fastpush.Server(port=0) as server:
        view = ServerView.of(server)
        scraper = Scraper(server.endpoint + "/metrics", server.keyring.primary)
        raw = await websockets.connect(client_url(view, "gauges", user_id="u1", groups=["a", "b"]))
        plain = await websockets.connect(client_url(view, "gauges", user_id="u1", groups=["a"]),
                                         subprotocols=[JSON_V1])
        reliable = await websockets.connect(client_url(view, "gauges", user_id="u2"), subprotocols=[JSON_RELIABLE_V1])
        for ws in (plain, reliable):
            await ws.recv()  # connected
        hub = server.hub("gauges")
        texts = ["one", "two, longer"]
        for text in texts:
            await hub.send_to_user("u2", text, content_type="text/plain")
        assert [json.loads(await reliable.recv())["data"] for _ in texts] == texts  # never acknowledged
        reliable.transport.abort()

        samples = await scraper.until(lambda s: value(s, "fastpush_reliable_sessions_waiting", hub="gauges") == 1)
        connections = {sp: value(samples, "fastpush_connections", hub="gauges", subprotocol=sp)
                       for sp in ("raw", JSON_V1, JSON_RELIABLE_V1, "protobuf.webpubsub.azure.v1",
                                  "protobuf.reliable.webpubsub.azure.v1")}
        assert connections == {"raw": 1, JSON_V1: 1, JSON_RELIABLE_V1: 1, "protobuf.webpubsub.azure.v1": 0,
                               "protobuf.reliable.webpubsub.azure.v1": 0}
        assert value(samples, "fastpush_replay_buffer_messages", hub="gauges") == 2
        assert value(samples, "fastpush_replay_buffer_bytes", hub="gauges") == sum(len(t) + 64 for t in texts)
        assert value(samples, "fastpush_groups", hub="gauges") == 2
        assert value(samples, "fastpush_users", hub="gauges") == 2
        assert value(samples, "fastpush_hubs") == 1
        await raw.close()
        await plain.close()
