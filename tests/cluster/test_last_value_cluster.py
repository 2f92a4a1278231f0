"""The last-value cache on nodes sharing a real Redis: the cache lives in Redis, written in one
script with the PUBLISH, so a connection joining on a node other than the sender's gets the
latest messages, then the live ones, none twice and none missed, also while sends and joins race
and for reliable clients (contiguous sequence ids) and the Python client SDK; REST GET
.../lastValue answers from Redis on any node; the hub's bounds hold in Redis too."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid

import pytest
from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubProtocolType

import fastpush
from fastpush.config import Config, HubSettings
from tests.conftest import ACCESS_KEY
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url, connect, eventually
from tests.server.test_bad_input import API, acall

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


@contextlib.asynccontextmanager
async def nodes(redis_server, count: int = 2, **settings):
    hub = "lv" + uuid.uuid4().hex[:10]  # keys in the shared Redis are per hub: tests never meet
    config = Config(hubs={hub: HubSettings(last_value_groups=["prices.*"], **settings)})
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(
            fastpush.Server(port=0, access_key=ACCESS_KEY, redis_url=redis_server.url, config=config))
            for _ in range(count)]
        yield hub, [ServerView.of(s) for s in servers]


async def rest_send(view: ServerView, hub: str, group: str, body: bytes, ttl: int | None = None) -> None:
    ttl_param = f"&messageTtlSeconds={ttl}" if ttl is not None else ""
    status, _ = await acall(view, "POST", f"/api/hubs/{hub}/groups/{group}/:send?{API}{ttl_param}", body)
    assert status == 202


async def last_value(view: ServerView, hub: str, group: str) -> list:
    status, body = await acall(view, "GET", f"/api/hubs/{hub}/groups/{group}/lastValue?{API}")
    assert status == 200, body
    return body


async def data_of(client, count: int) -> list:
    out = []
    for _ in range(count):
        message = await client.recv()
        assert message["type"] == "message", message
        out.append(message["data"])
    return out


async def test_a_join_on_another_node_gets_the_latest_then_live(redis_server):
    async with nodes(redis_server, last_value_depth=2) as (hub, (a, b)):
        for i in range(4):
            await rest_send(a, hub, "prices.A", b"v%d" % i)
        assert await last_value(b, hub, "prices.A") == [{"dataType": "text", "data": "v2"},
                                                        {"dataType": "text", "data": "v3"}]
        first = await connect(b, hub, JSON_V1, groups=["prices.A"])  # the first member on b: b reads Redis
        assert await data_of(first, 2) == ["v2", "v3"]
        await rest_send(a, hub, "prices.A", b"v4")
        assert await data_of(first, 1) == ["v4"]
        second = await connect(b, hub, JSON_V1, roles=ROLES)  # b holds the group's mirror now
        assert (await second.request({"type": "joinGroup", "group": "prices.A"}))["success"] is True
        assert await data_of(second, 2) == ["v3", "v4"]
        raw = await connect(a, hub, groups=["prices.A"])  # a raw client gets the data alone
        assert await raw.recv() == "v3" and await raw.recv() == "v4"
        await first.expect_silence()
        await second.expect_silence()


async def test_rest_add_on_one_node_of_a_connection_on_another(redis_server):
    async with nodes(redis_server, count=3) as (hub, (a, b, c)):
        await rest_send(c, hub, "prices.B", b"only")
        client = await connect(b, hub, JSON_V1)
        status, _ = await acall(a, "PUT", f"/api/hubs/{hub}/groups/prices.B/connections/{client.connection_id}?{API}")
        assert status == 200
        assert await data_of(client, 1) == ["only"]
        await rest_send(c, hub, "prices.B", b"next")
        assert await data_of(client, 1) == ["next"]
        await client.expect_silence()


async def test_a_users_group_on_a_new_connection_and_a_reliable_client(redis_server):
    async with nodes(redis_server, last_value_depth=3) as (hub, (a, b)):
        for value in (b"x", b"y"):
            await rest_send(a, hub, "prices.C", value)
        status, _ = await acall(a, "PUT", f"/api/hubs/{hub}/users/ann/groups/prices.C?{API}")
        assert status == 200
        ann = await connect(b, hub, JSON_RELIABLE_V1, user_id="ann")
        cached = [await ann.recv(), await ann.recv()]
        await rest_send(a, hub, "prices.C", b"z")
        live = await ann.recv()
        assert [m["data"] for m in (*cached, live)] == ["x", "y", "z"]
        assert [m["sequenceId"] for m in (*cached, live)] == [1, 2, 3]


async def test_expired_messages_are_not_served_from_redis(redis_server):
    async with nodes(redis_server, last_value_depth=2) as (hub, (a, b)):
        await rest_send(a, hub, "prices.T", b"kept")
        await rest_send(a, hub, "prices.T", b"short", ttl=1)

        async def only_kept() -> bool:
            return await last_value(b, hub, "prices.T") == [{"dataType": "text", "data": "kept"}]
        assert await eventually(only_kept, 5)
        client = await connect(b, hub, JSON_V1, groups=["prices.T"])
        assert await data_of(client, 1) == ["kept"]
        await client.expect_silence()


@pytest.mark.parametrize("joiner_protocol", [JSON_V1, JSON_RELIABLE_V1])
async def test_sends_racing_joins_on_another_node_are_seen_once_in_order(redis_server, joiner_protocol):
    """A client on node a streams numbered sends; on node b a fresh client (b's only member, so
    b reads Redis each round) joins mid-stream: it sees the cached one, then every later one."""
    async with nodes(redis_server) as (hub, (a, b)):
        sender = await connect(a, hub, JSON_V1, roles=ROLES)
        total = 40

        async def send_all(offset: int) -> None:
            for i in range(total):
                await sender.send({"type": "sendToGroup", "group": "prices.R", "dataType": "json",
                                   "data": offset + i})
                if i % 3 == 0:
                    await asyncio.sleep(0)

        for round_ in range(12):
            offset = round_ * 1000
            joiner = await connect(b, hub, joiner_protocol, roles=ROLES)
            sending = asyncio.create_task(send_all(offset))
            await asyncio.sleep(0.001 * (round_ % 4))
            await joiner.send({"type": "joinGroup", "group": "prices.R"})
            await sending
            seen: list[int] = []
            sequence_ids: list[int] = []
            while not seen or seen[-1] != offset + total - 1:
                message = await joiner.recv()
                if message.get("type") == "message":
                    seen.append(message["data"])
                    sequence_ids.append(message.get("sequenceId", 0))
            end = offset + total
            if seen[0] < offset:  # the cached one is the round before's last send; then all of this round
                assert seen == [offset - 1000 + total - 1, *range(offset, end)], seen
            else:  # the cached one (or the first live one), then every later one, once each
                assert seen == list(range(seen[0], end)), seen
            if joiner_protocol == JSON_RELIABLE_V1:
                assert sequence_ids == list(range(1, len(seen) + 1))
            await joiner.close()
            assert await eventually(lambda: _no_member(b, hub, "prices.R"), 5)  # b reads Redis again next round


async def test_the_python_client_sdk_on_another_node(redis_server):
    async with nodes(redis_server, last_value_depth=2) as (hub, (a, b)):
        for i in range(3):
            await rest_send(a, hub, "prices.S", b"s%d" % i)
        received: list[tuple[int, str]] = []
        sdk = WebPubSubClient(client_url(b, hub, roles=ROLES), protocol_type=WebPubSubProtocolType.JSON_RELIABLE,
                              ack_timeout=2.0, start_timeout=5.0)
        sdk.subscribe(CallbackType.GROUP_MESSAGE, lambda e: received.append((e.sequence_id, e.data)))
        await asyncio.to_thread(sdk.open)
        try:
            await asyncio.to_thread(sdk.join_group, "prices.S")
            assert await eventually(lambda: len(received) >= 2, 10)
            await rest_send(a, hub, "prices.S", b"s3")
            assert await eventually(lambda: len(received) >= 3, 10)
            assert sorted(received) == [(1, "s1"), (2, "s2"), (3, "s3")]
        finally:
            await asyncio.to_thread(sdk.close)


def _no_member(view: ServerView, hub: str, group: str) -> bool:
    found = view.server.node.find(hub)
    return found is None or not found.tables.group_members(group)


def _redis(port: int, *command: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall((f"*{len(command)}\r\n" + "".join(f"${len(c)}\r\n{c}\r\n" for c in command)).encode())
        return conn.recv(65536)


async def test_the_hubs_bounds_hold_in_redis(redis_server):
    async with nodes(redis_server, last_value_max_groups=4, last_value_max_bytes=2048) as (hub, (a, b)):
        for i in range(30):
            await rest_send(a if i % 2 else b, hub, f"prices.G{i}", b"x" * (i * 20 + 1))
        groups = int(_redis(redis_server.port, "ZCARD", f"fastpush:lvz:{hub}")[1:].split(b"\r\n")[0])
        assert 1 <= groups <= 4  # the bytes may allow fewer than the count
        stored = int(_redis(redis_server.port, "GET", f"fastpush:lvb:{hub}").split(b"\r\n")[1])
        assert 0 < stored <= 2048
        assert await last_value(b, hub, "prices.G0") == []
        assert (await last_value(b, hub, "prices.G29"))[0]["data"] == "x" * 581
        await rest_send(a, hub, "prices.G29", b"y" * 4096)  # larger than the hub's bytes: its group goes
        assert await last_value(b, hub, "prices.G29") == []


async def test_a_member_already_there_sees_each_send_once_while_its_node_refills(redis_server):
    """With room for one group, sends to a second group evict the first's mirror on node b, so a
    join there refills it from Redis while b's earlier member keeps listening: the sends held
    meanwhile reach that member once, in order, and the joiner gets no older one than its cache."""
    async with nodes(redis_server, last_value_max_groups=1) as (hub, (a, b)):
        sender = await connect(a, hub, JSON_V1, roles=ROLES)
        watcher = await connect(b, hub, JSON_V1, groups=["prices.W", "prices.E"])
        total, rounds = 30, 8

        async def send_all(offset: int) -> None:
            for i in range(total):
                group = "prices.E" if i % 5 == 0 else "prices.W"  # E evicts W's mirror (and in Redis)
                await sender.send({"type": "sendToGroup", "group": group, "dataType": "json", "data": offset + i})
                if i % 3 == 0:
                    await asyncio.sleep(0)

        watched: list[int] = []
        for round_ in range(rounds):
            offset = round_ * 1000
            joiner = await connect(b, hub, JSON_V1, roles=ROLES)
            sending = asyncio.create_task(send_all(offset))
            await asyncio.sleep(0.001 * (round_ % 4))
            await joiner.send({"type": "joinGroup", "group": "prices.E"})  # fills E's mirror: W's goes
            await joiner.send({"type": "joinGroup", "group": "prices.W"})  # refills W's, the watcher listening
            await sending
            seen: list[int] = []
            last_w = offset + total - 1 if (total - 1) % 5 else offset + total - 2
            while not seen or seen[-1] != last_w:
                message = await joiner.recv()
                if message.get("type") == "message" and message["group"] == "prices.W":
                    seen.append(message["data"])
            sent_to_w = [r * 1000 + i for r in range(round_ + 1) for i in range(total) if i % 5]
            assert seen == [v for v in sent_to_w if v >= seen[0]], seen  # from its cache on: each once, in order
            while not watched or watched[-1] != offset + total - 1:
                watched.append((await watcher.recv())["data"])
            await joiner.close()
        assert watched == [r * 1000 + i for r in range(rounds) for i in range(total)]
