"""Several nodes on one Redis: ordering across nodes, a node that dies, Redis going away and
coming back, a reliable client recovering onto another node, and worker processes on one port."""
from __future__ import annotations

import asyncio
import http.client
import json
import signal
import time

import jwt
import pytest
import websockets

import fastpush
from tests.cli_process import ServeProcess
from tests.conftest import ACCESS_KEY, RedisProcess
from tests.dashboard_client import Dashboard
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url, connect


def _endpoint(connection_string: str) -> str:
    return connection_string.split(";")[0].split("=", 1)[1]


def rest(view: ServerView, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    token = jwt.encode({"aud": view.endpoint + target, "exp": int(time.time()) + 60}, view.access_key.encode(),
                       algorithm="HS256")
    conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)
    try:
        conn.request(method, target, body=body,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def arest(*args) -> tuple[int, bytes]:
    return await asyncio.to_thread(rest, *args)


async def _eventually(check, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return await check()


@pytest.fixture
async def private_redis():
    redis = RedisProcess()
    yield redis
    redis.stop()


async def test_one_publisher_keeps_its_order_on_every_node(cluster, hub_name):
    members = [await connect(node, hub_name, JSON_V1, groups=["ticker"]) for node in cluster]
    publisher = ServerView(cluster[1].endpoint, ACCESS_KEY)
    for n in range(300):
        status, _ = await arest(publisher, "POST", f"/api/hubs/{hub_name}/groups/ticker/:send?api-version=2024-12-01",
                                str(n).encode())
        assert status == 202
    for member in members:
        assert [(await member.recv())["data"] for _ in range(300)] == [str(n) for n in range(300)]


async def test_a_dead_nodes_connections_disappear_and_others_keep_delivering(redis_server, hub_name):
    survivor = ServeProcess("--redis-url", redis_server.url, env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
    doomed = ServeProcess("--redis-url", redis_server.url, env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
    try:
        alive_view = ServerView(_endpoint(survivor.connection_string), ACCESS_KEY)
        doomed_view = ServerView(_endpoint(doomed.connection_string), ACCESS_KEY)
        kept = await connect(alive_view, hub_name, JSON_V1)
        lost = await connect(doomed_view, hub_name, JSON_V1, user_id="ghost")
        target = f"/api/hubs/{hub_name}/connections/{lost.connection_id}"
        assert (await arest(alive_view, "HEAD", target))[0] == 200
        doomed.proc.kill()  # no goodbye: its Redis entries stay until they expire

        async def gone() -> bool:
            return (await arest(alive_view, "HEAD", target))[0] == 404
        assert await _eventually(gone, 20), "a dead node's connection still exists"
        assert (await arest(alive_view, "HEAD", f"/api/hubs/{hub_name}/users/ghost"))[0] == 404
        assert (await arest(alive_view, "POST", f"/api/hubs/{hub_name}/:send", b"after"))[0] == 202
        assert (await kept.recv())["data"] == "after"
    finally:
        for process in (survivor, doomed):
            if process.proc.poll() is None:
                process.stop(signal.SIGKILL)


async def test_redis_outage_refuses_sends_then_recovers(private_redis, hub_name):
    # A short outage keeps the clients (a long one closes them: tests/cluster/test_broker_loss.py);
    # "short" here is however long reconnecting takes on a busy machine.
    async with fastpush.Server(port=0, access_key=ACCESS_KEY, redis_url=private_redis.url,
                               broker_loss_timeout_seconds=60) as a, \
            fastpush.Server(port=0, access_key=ACCESS_KEY, redis_url=private_redis.url,
                            broker_loss_timeout_seconds=60) as b:
        client = await connect(ServerView(a.endpoint, ACCESS_KEY), hub_name, JSON_V1, groups=["g"])
        rest_b = ServerView(b.endpoint, ACCESS_KEY)
        send = f"/api/hubs/{hub_name}/groups/g/:send?api-version=2024-12-01"
        assert (await arest(rest_b, "POST", send, b"before"))[0] == 202
        assert (await client.recv())["data"] == "before"

        private_redis.stop()

        async def degraded() -> bool:
            health = json.loads((await arest(rest_b, "GET", "/api/health"))[1])
            return health["status"] == "degraded" and health["broker"]["healthy"] is False
        assert await _eventually(degraded, 10)  # the node notices the outage a moment after it begins
        status, body = await arest(rest_b, "POST", send, b"during")
        assert status == 503 and b"unavailable" in body
        await client.send({"type": "ping"})  # the socket itself stays up
        assert await client.recv() == {"type": "pong"}

        private_redis.start()  # empty: the nodes must subscribe and register again

        async def delivering() -> bool:
            return (await arest(rest_b, "POST", send, b"after"))[0] == 202
        assert await _eventually(delivering, 20)
        assert (await client.recv())["data"] == "after"
        assert (await arest(rest_b, "HEAD", f"/api/hubs/{hub_name}/connections/{client.connection_id}"))[0] == 200


async def test_reliable_client_recovers_onto_another_node(cluster, hub_name):
    first, second = cluster[0], cluster[2]
    ws = await websockets.connect(client_url(first, hub_name, groups=["g"]), subprotocols=[JSON_RELIABLE_V1])
    hello = json.loads(await ws.recv())
    publisher = ServerView(cluster[1].endpoint, ACCESS_KEY)
    send = f"/api/hubs/{hub_name}/groups/g/:send?api-version=2024-12-01"
    await arest(publisher, "POST", send, b"m1")
    assert json.loads(await ws.recv())["sequenceId"] == 1
    ws.transport.abort()
    await asyncio.sleep(0.1)
    for text in (b"m2", b"m3"):
        assert (await arest(publisher, "POST", send, text))[0] == 202
    url = client_url(second, hub_name) + (f"&awps_connection_id={hello['connectionId']}"
                                          f"&awps_reconnection_token={hello['reconnectionToken']}")
    async with websockets.connect(url, subprotocols=[JSON_RELIABLE_V1]) as ws2:
        assert json.loads(await ws2.recv())["connectionId"] == hello["connectionId"]
        resent = [json.loads(await ws2.recv()) for _ in range(3)]
        assert [(m["sequenceId"], m["data"]) for m in resent] == [(1, "m1"), (2, "m2"), (3, "m3")]
        await arest(publisher, "POST", send, b"m4")  # its groups came along
        assert json.loads(await ws2.recv())["data"] == "m4"


def test_workers_share_one_port(redis_server):
    serve = ServeProcess("--workers", "2", "--redis-url", redis_server.url, env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
    try:
        view = ServerView(_endpoint(serve.connection_string), ACCESS_KEY)

        async def scenario():
            clients = [await connect(view, "workers", JSON_V1) for _ in range(8)]
            assert (await arest(view, "POST", "/api/hubs/workers/:send", b"to every worker's clients"))[0] == 202
            for client in clients:
                assert (await client.recv())["data"] == "to every worker's clients"
        asyncio.run(scenario())
        # No dashboard behind a shared port: a browser's requests would reach a different worker each time.
        assert Dashboard(view.endpoint).request("GET", "/dashboard/login?token=x").status == 404
        assert serve.stop(signal.SIGTERM) == 0
        assert "Dashboard:" not in "".join(serve.output) + serve.proc.stdout.read()
    finally:
        if serve.proc.poll() is None:
            serve.stop(signal.SIGKILL)
