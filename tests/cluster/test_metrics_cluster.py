"""Metrics of scaled-out servers: the broker's health, reconnects and publish latency follow a real
Redis going away and coming back; with --workers N each worker is a scrape target of its own on
--metrics-address PORT+i, and their connection counts add up to the clients of the shared port."""
from __future__ import annotations

import asyncio
import random
import signal
import socket
import threading
from pathlib import Path

import pytest
import websockets

import fastpush
from tests.cli_process import ServeProcess
from tests.conftest import ACCESS_KEY, RedisProcess
from tests.helpers import ServerView, client_url
from tests.metrics_client import Scraper, series, value


@pytest.fixture
def private_redis():
    redis = RedisProcess()
    yield redis
    redis.stop()


async def test_broker_metrics_follow_redis(private_redis):
    async with fastpush.Server(port=0, access_key=ACCESS_KEY, redis_url=private_redis.url) as server:
        scraper = Scraper(server.endpoint + "/metrics", ACCESS_KEY)
        before = await scraper.scrape()
        assert value(before, "fastpush_broker_up", broker="redis") == 1
        hub = server.hub("published")
        for _ in range(5):
            await hub.send_to_all("m", content_type="text/plain")
        await hub.add_user_to_group("u", "g")  # a confirmed operation: timed until the nodes confirm it
        after = await scraper.scrape()
        count = "fastpush_broker_publish_duration_seconds_count"
        assert value(after, count) - value(before, count) == 6

        private_redis.stop()
        await scraper.until(lambda s: value(s, "fastpush_broker_up", broker="redis") == 0)
        private_redis.start()
        reconnects = value(before, "fastpush_broker_reconnects_total") + 1
        await scraper.until(lambda s: value(s, "fastpush_broker_up", broker="redis") == 1
                            and value(s, "fastpush_broker_reconnects_total") == reconnects)


def _free_port_pair() -> int:
    """A port P with P and P+1 free now (bounded search), below the kernel's ephemeral range: the workers
    bind them a moment later, and an outgoing connection (to Redis, say) never takes a port from there."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        port = random.randrange(max(1024, low - 12000), max(1026, low - 1))
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two consecutive free ports")


def test_each_worker_is_a_scrape_target_of_its_own(redis_server):
    port = _free_port_pair()
    serve = ServeProcess("--workers", "2", "--redis-url", redis_server.url, "--metrics-address", f"127.0.0.1:{port}",
                         env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
    threading.Thread(target=lambda: serve.output.extend(serve.proc.stdout), daemon=True).start()
    try:
        view = ServerView(serve.connection_string.split(";")[0].split("=", 1)[1], ACCESS_KEY)

        async def scenario() -> None:
            clients = [await websockets.connect(client_url(view, "spread")) for _ in range(10)]
            workers = [Scraper(f"http://127.0.0.1:{port + i}/metrics") for i in range(2)]

            async def total() -> list[float]:
                return [sum(series(await w.scrape(), "fastpush_connections").values()) for w in workers]
            deadline = asyncio.get_running_loop().time() + 15
            while sum(counts := await total()) != 10:
                assert asyncio.get_running_loop().time() < deadline, counts
                await asyncio.sleep(0.05)
            for client in clients:
                await client.close()
        asyncio.run(scenario())
        assert serve.stop(signal.SIGTERM) == 0
    finally:
        if serve.proc.poll() is None:
            serve.stop(signal.SIGKILL)
