"""The overview's figures are the metrics registry's, sampled: connection, user, group and hub
counts as they are, counters as rates whose sum over the samples is exactly what happened."""
from __future__ import annotations

import asyncio

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from fastpush import Server
from fastpush.dashboard.overview import HISTORY_SAMPLES, Overview
from tests.conftest import ACCESS_KEY, _run_in_thread, _stop
from tests.dashboard_client import Dashboard
from tests.helpers import JSON_V1, connect, eventually

pytestmark = pytest.mark.timeout(120)


class _Sample:
    def __init__(self, name: str, labels: dict[str, str], value: float):
        self.name, self.labels, self.value = name, labels, value


class _Family:
    def __init__(self, *samples: _Sample):
        self.samples = list(samples)


def test_gauges_are_summed_over_their_labels_and_counters_become_rates(monkeypatch):
    readings = iter([(100.0, 0, 0), (102.0, 10, 4), (104.0, 30, 4)])
    clock = {"now": 0.0}
    monkeypatch.setattr("fastpush.dashboard.overview.time.time", lambda: clock["now"])

    def collect():
        clock["now"], deliveries, connections = next(readings)
        return [_Family(_Sample("fastpush_deliveries_total", {}, deliveries)),
                _Family(_Sample("fastpush_connections", {"hub": "a", "subprotocol": "raw"}, connections - 1),
                        _Sample("fastpush_connections", {"hub": "b", "subprotocol": "json.webpubsub.azure.v1"}, 1))]
    overview = Overview(collect)
    for _ in range(3):
        overview.sample()
    series = overview.history()["series"]
    assert series["time"] == [102.0, 104.0]
    assert series["deliveries"] == [5.0, 10.0]  # 10 in 2 s, then 20 in 2 s
    assert series["connections"] == [4, 4] and series["connections:raw"] == [3, 3]
    assert series["connections:json.webpubsub.azure.v1"] == [1, 1]
    assert overview.history(since=102.0)["series"]["time"] == [104.0]


def test_the_history_keeps_fifteen_minutes():
    overview = Overview(list)
    for _ in range(HISTORY_SAMPLES + 10):
        overview.sample()
    assert len(overview.history()["series"]["time"]) == HISTORY_SAMPLES


@pytest.fixture
def fresh_server():
    """A server of its own: the overview counts the whole process's hubs."""
    running, thread, _ = _run_in_thread(lambda: Server("127.0.0.1", 0, access_key=ACCESS_KEY))
    yield running
    _stop(running, thread)


def latest(user: Dashboard, name: str) -> float | None:
    values = user.get("api/overview").json()["series"][name]
    return values[-1] if values else None


async def test_the_overview_counts_what_the_server_holds_and_did(fresh_server):
    server = fresh_server
    user = Dashboard(server.endpoint)
    assert (await asyncio.to_thread(user.login, server.call(server.server.dashboard.login_url))).status == 200
    clients = [await connect(server, "ov", JSON_V1, user_id=f"u{i}", groups=["g"]) for i in range(3)]
    try:
        assert await eventually(lambda: latest(user, "connections") == 3, 15)
        assert latest(user, "connections:json.webpubsub.azure.v1") == 3
        assert (latest(user, "users"), latest(user, "groups"), latest(user, "hubs")) == (3, 1, 1)
        assert latest(user, "brokerUp") == 1
        start = user.get("api/overview").json()["series"]["time"][-1]
        service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub="ov")
        for i in range(10):
            await asyncio.to_thread(service.send_to_all, f"m{i}", content_type="text/plain")
        for client in clients:
            for _ in range(10):
                await client.recv()
        # Wait for a sample after the sends; rates times their intervals add up to the counts.
        assert await eventually(lambda: user.get("api/overview").json()["series"]["time"][-1] > start + 2.5, 15)
        series = user.get(f"api/overview?since={start - 0.001}").json()["series"]
        times = series["time"]
        steps = [t - before for t, before in zip(times[1:], times[:-1], strict=True)]
        delivered = sum(rate * step for rate, step in zip(series["deliveries"][1:], steps, strict=True))
        sent = sum(rate * step for rate, step in zip(series["messagesOut"][1:], steps, strict=True))
        assert round(delivered) == 30 and round(sent) == 10
    finally:
        for client in clients:
            await client.close()
    assert await eventually(lambda: latest(user, "connections") == 0, 15)
