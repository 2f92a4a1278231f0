"""What a node hears on its Redis channels is not trusted to be a message of its own version: a
real message with another wire version, one in the unversioned format of earlier releases, and
garbage, published straight to the node's channels with a raw Redis client, are dropped and
counted (as is a message whose handling fails), logged once, and never end the node's
subscription; deliveries go on. Such entries pushed onto a last-value list are left out of what
is served. A node does not start on a Redis where a live node speaks another wire version."""
from __future__ import annotations

import asyncio
import logging

import hiredis
import msgspec
import pytest

import fastpush
from fastpush import ops
from fastpush.broker.redis.bus import decode_envelope, encode_envelope
from fastpush.broker.redis.wire import FIRST_VERSION, WIRE_VERSION, OtherWireVersion
from tests.cli_process import run_fastpush
from tests.cluster.test_cluster import arest
from tests.conftest import ACCESS_KEY, RedisProcess
from tests.helpers import JSON_V1, ServerView, connect
from tests.metrics_client import Scraper, value

pytestmark = pytest.mark.timeout(60)
DROPPED = "fastpush_broker_dropped_messages_total"
OTHER_VERSION = WIRE_VERSION + 1
_pack = msgspec.msgpack.encode

# Bytes that are no envelope of this version, each for a different part of the reading.
GARBAGE = [
    b"", b"garbage", b"\x91", b"\xdd\xff\xff\xff\xff",  # not msgpack, a truncated array, a 4-billion-element claim
    b"\x91" * 100_000,  # nesting far deeper than any decoder's stack
    b"\xc1", b"\xc1x:\x94", b"\xc1" + b"9" * 5000 + b":\x91",  # a last-value entry mark with no number, a bad one
    _pack(["text"]),  # an array, but no version in it
    _pack([WIRE_VERSION, 9]),  # this version, an unknown kind
    _pack([WIRE_VERSION, 0]),  # an operation envelope without its operation
    _pack([WIRE_VERSION, 0, 0, None, b"\xff\xff"]),  # with bytes that are no operation
    _pack([WIRE_VERSION, 0, 0, None, _pack(["SendToAll"])]),  # an operation missing its fields
    _pack([WIRE_VERSION, 1, "not a request id"]),
]


class RawRedis:
    """A plain RESP client on its own socket: what anyone who can reach Redis can send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = hiredis.Reader()

    @classmethod
    async def open(cls, port: int) -> RawRedis:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def command(self, *args: bytes | str | int) -> object:
        self.writer.write(hiredis.pack_command(args))
        return await self.reply()

    async def reply(self) -> object:
        async with asyncio.timeout(10):
            while (reply := self.parser.gets()) is False:
                data = await self.reader.read(65536)
                assert data, "Redis closed the connection"
                self.parser.feed(data)
        return reply

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def private_redis():
    redis = RedisProcess()
    yield redis
    redis.stop()


async def test_messages_of_another_version_and_garbage_are_dropped_counted_and_deliveries_go_on(
        private_redis, hub_name, caplog):
    caplog.set_level(logging.WARNING, logger="fastpush.broker")
    async with fastpush.Server(port=0, access_key=ACCESS_KEY, redis_url=private_redis.url) as node:
        view = ServerView(node.endpoint, ACCESS_KEY)
        scraper = Scraper(node.endpoint + "/metrics", ACCESS_KEY)
        client = await connect(view, hub_name, JSON_V1)
        send = f"/api/hubs/{hub_name}/:send"
        channel = f"fastpush:h:{hub_name.lower()}".encode()
        listener, publisher = await RawRedis.open(private_redis.port), await RawRedis.open(private_redis.port)
        try:
            # Two real messages of this version, as the node publishes them (seen by a raw subscriber).
            await listener.command("SUBSCRIBE", channel)
            captured = []
            for text in (b"acted on", b"replayed"):
                assert (await arest(view, "POST", send, text))[0] == 202
                assert (await client.recv())["data"] == text.decode()
                kind, _, message = await listener.reply()
                assert kind == b"message"
                captured.append(message)
            real, control = captured
            assert real[0] in range(0x91, 0xA0) and real[1] == WIRE_VERSION  # a fixarray, the version first
            other_version = real[:1] + bytes([OTHER_VERSION]) + real[2:]
            unversioned = bytes([real[0] - 1]) + real[2:]  # the layout before versions: the kind first
            assert unversioned[1] < FIRST_VERSION
            # This version, well formed, but applying it raises (a filter no REST call would have let through).
            envelope = decode_envelope(real)
            bad_filter = msgspec.structs.replace(ops.decode(envelope.data), filter="(((")
            failing = encode_envelope(msgspec.structs.replace(envelope, data=ops.encode(bad_filter)))

            before = await scraper.scrape()
            node_channel = f"fastpush:n:{node.node.broker.node_id}".encode()
            for target, receivers in ((channel, 2), (node_channel, 1)):  # the hub's: the node and `listener`
                for message in (other_version, unversioned, *GARBAGE):
                    assert await publisher.command("PUBLISH", target, message) == receivers
            assert await publisher.command("PUBLISH", channel, failing) == 2
            # Published after them on the same connection, so the node reads it after them.
            assert await publisher.command("PUBLISH", channel, control) == 2
            assert (await client.recv())["data"] == "replayed"  # not "acted on": the others were dropped

            after = await scraper.scrape()
            assert value(after, DROPPED, reason="version") - value(before, DROPPED, reason="version") == 4
            malformed = value(after, DROPPED, reason="malformed") - value(before, DROPPED, reason="malformed")
            assert malformed == 2 * len(GARBAGE)
            assert value(after, DROPPED, reason="failed") - value(before, DROPPED, reason="failed") == 1
            assert value(after, "fastpush_broker_up", broker="redis") == 1
            reconnects = "fastpush_broker_reconnects_total"
            assert value(after, reconnects) == value(before, reconnects)  # the subscription never ended

            assert (await arest(view, "POST", send, b"after"))[0] == 202
            assert (await client.recv())["data"] == "after"
        finally:
            listener.close()
            publisher.close()
    lines = [r.getMessage() for r in caplog.records if "dropped a message from Redis" in r.getMessage()]
    assert len(lines) == 1, lines  # one line a minute at most, whatever the flood
    assert f"wire version {OTHER_VERSION}; this node speaks {WIRE_VERSION}" in lines[0], lines[0]


async def test_a_node_does_not_join_a_redis_whose_live_nodes_speak_another_version(private_redis, caplog):
    admin = await RawRedis.open(private_redis.port)
    try:
        await admin.command("SADD", "fastpush:nodes", "older", "newer")
        await admin.command("SET", "fastpush:alive:older", b"1", "PX", 30_000)  # as an unversioned node writes it
        await admin.command("SET", "fastpush:alive:newer", str(OTHER_VERSION), "PX", 30_000)
        server = fastpush.Server(port=0, access_key=ACCESS_KEY, redis_url=private_redis.url)
        with pytest.raises(OtherWireVersion) as refused:
            await server.start()
        text = str(refused.value)
        assert "2 live node(s)" in text and f"newer ({OTHER_VERSION})" in text and "older (unversioned" in text, text
        assert not server.node.broker.health()["healthy"]
        result = run_fastpush("serve", "--port", "0", "--redis-url", private_redis.url, timeout=30)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("fastpush: --redis-url: 2 live node(s) on "), result.stderr

        await admin.command("DEL", "fastpush:alive:older", "fastpush:alive:newer")  # they are gone
        async with fastpush.Server(port=0, access_key=ACCESS_KEY, redis_url=private_redis.url) as node:
            alive = await admin.command("GET", f"fastpush:alive:{node.node.broker.node_id}")
            assert alive == str(WIRE_VERSION).encode()
            # One that comes later is logged once by the keep-alive's look at the live nodes (run here twice).
            caplog.set_level(logging.ERROR, logger="fastpush.broker")
            await admin.command("SET", "fastpush:alive:newer", str(OTHER_VERSION), "PX", 30_000)
            for _ in range(2):
                await node.node.broker._registry.forget_dead_nodes()
            told = [r.getMessage() for r in caplog.records if "speaks wire version" in r.getMessage()]
            assert len(told) == 1 and f"node newer on the same Redis speaks wire version {OTHER_VERSION}" in told[0]
    finally:
        admin.close()


async def test_last_value_entries_of_another_version_are_left_out(private_redis):
    """The last-value cache in Redis is read by every node: an entry another version wrote, or
    garbage pushed onto the list, is left out of what is served; the real ones are not."""
    from fastpush.broker.redis import RedisBroker
    from fastpush.lastvalue import LastValuePolicy, LastValues
    from fastpush.node import Node
    from tests.brokers.cluster import text

    policy = LastValuePolicy(["prices.*"], depth=5)
    broker = RedisBroker(private_redis.url, last_value_policy=lambda hub: policy if hub.lower() == "h" else None)
    node = Node(broker, configure=lambda hub: setattr(hub, "last_values", LastValues(policy, broker.last_values)))
    admin = await RawRedis.open(private_redis.port)
    await node.start()
    try:
        for value in ("1", "2"):
            await broker.publish(ops.SendToGroup("h", "prices.a", text(value)))
        key = "fastpush:lv:h:prices.a"
        real = await admin.command("LRANGE", key, 0, 0)
        number, _, envelope = real[0][1:].partition(b":")
        other_version = b"\xc1" + number + b":" + envelope[:1] + bytes([OTHER_VERSION]) + envelope[2:]
        await admin.command("RPUSH", key, other_version, b"junk", b"\xc1x:\x91")
        cached = await broker.ask(ops.LastValue("h", "prices.a"))
        assert [entry.payload.data for entry in cached] == [b"1", b"2"]
    finally:
        admin.close()
        await node.stop()
