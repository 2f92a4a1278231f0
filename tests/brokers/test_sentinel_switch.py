"""A Sentinel switch while the old master is still up (a partition, or a planned failover): the
nodes hear of it one by one, and until the last has, some publish on the old master while others
listen on the new one. A node leaving the old master pauses its publishing there, so a node that
has not heard yet gets no answer for a send (it fails, 503, when that node leaves) rather than an
OK whose message the nodes already gone never see.

Two real redis-servers play the old and the new master. The Sentinel is scripted (it answers the
master's address and announces `+switch-master` to one node at a time, which no real Sentinel on
one loopback can be made to do); each node follows it on a port of its own, so the test chooses
who hears of the switch when.
"""
from __future__ import annotations

import asyncio
import uuid

import hiredis
import pytest

from fastpush import ops
from fastpush.broker.errors import BrokerUnavailable
from fastpush.broker.redis import RedisBroker
from fastpush.node import Node
from fastpush.outcome import resolve
from fastpush.protocol.payload import DataType, Payload
from tests.conftest import RedisProcess
from tests.doubles import FakeConnection
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(60)

HUB = "chat"
MASTER = "mymaster"
NODE_TTL = 1.5


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _array(*values: bytes) -> bytes:
    return b"*%d\r\n" % len(values) + b"".join(_bulk(v) for v in values)


class ScriptedSentinel:
    """Answers GET-MASTER-ADDR-BY-NAME with `master_port`; on each of its ports, keeps the
    `+switch-master` subscribers so `announce` can tell one port's followers of a switch."""

    def __init__(self, master_port: int) -> None:
        self.master_port = master_port
        self.servers: list[asyncio.AbstractServer] = []
        self.followers: dict[int, list[asyncio.StreamWriter]] = {}

    async def listen(self) -> int:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.servers.append(server)
        port = server.sockets[0].getsockname()[1]
        self.followers[port] = []
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        parser = hiredis.Reader()
        while data := await reader.read(4096):
            parser.feed(data)
            while (request := parser.gets()) is not False:
                name = request[0].upper()
                if name == b"SENTINEL":
                    writer.write(_array(b"127.0.0.1", str(self.master_port).encode()))
                elif name == b"SUBSCRIBE":
                    writer.write(b"*3\r\n" + _bulk(b"subscribe") + _bulk(b"+switch-master") + b":1\r\n")
                    self.followers[port].append(writer)
                elif name == b"PING":
                    writer.write(_array(b"pong", b""))
        writer.close()

    def announce(self, port: int, old_port: int) -> None:
        text = f"{MASTER} 127.0.0.1 {old_port} 127.0.0.1 {self.master_port}".encode()
        for writer in self.followers[port]:
            writer.write(_array(b"message", b"+switch-master", text))

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for writers in self.followers.values():
            for writer in writers:
                writer.close()


def send(node: Node, text: str) -> asyncio.Future:
    return resolve(node.submit(ops.SendToAll(HUB, Payload(DataType.TEXT, text.encode()))))


@pytest.fixture
def masters():
    old, new = RedisProcess(), RedisProcess()
    yield old, new
    old.stop()
    new.stop()


async def test_nodes_that_hear_of_a_switch_at_different_times_lose_no_accepted_send(masters):
    old, new = masters
    sentinel = ScriptedSentinel(old.port)
    prefix = "switch-" + uuid.uuid4().hex[:12]
    ports = [await sentinel.listen(), await sentinel.listen()]
    a, b = (Node(RedisBroker(f"redis+sentinel://127.0.0.1:{port}/{MASTER}", prefix=prefix, node_ttl=NODE_TTL))
            for port in ports)
    started: list[Node] = []
    try:
        for node in (a, b):
            await node.start()
            started.append(node)
        client = FakeConnection("on-a", hub=HUB)
        await resolve(a.broker.prepare_connection(HUB, None, ()))
        a.hub(HUB).add_connection(client, ())
        assert await eventually(lambda: all(sentinel.followers.values()), 10)  # both follow their port
        assert await eventually(lambda: b.broker.node_id in a.broker._registry.peers, 10)  # a's keep-alive saw b
        await send(b, "before")
        assert await eventually(lambda: client.texts == ["before"], 5)

        sentinel.master_port = new.port
        sentinel.announce(ports[0], old.port)  # only a hears of it: a moves, and waits for b there

        def a_waits_for_b() -> bool:
            health = a.broker.health()
            return not health["healthy"] and "waiting for 1 other node" in (health.get("error") or "")
        assert await eventually(a_waits_for_b, 10), a.broker.health()
        assert b.broker.health()["healthy"]  # b is still on the old master, which a paused

        during = asyncio.ensure_future(send(b, "during"))
        done, _ = await asyncio.wait({during}, timeout=0.3)
        assert not done, "a send on the old master was answered after another node had left it"
        sentinel.announce(ports[1], old.port)  # b hears of it too, and leaves: its send fails
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(during, 10)

        assert await eventually(lambda: a.broker.health()["healthy"] and b.broker.health()["healthy"], 15)
        await send(b, "after")
        assert await eventually(lambda: client.texts == ["before", "after"], 5), client.texts
        assert all(f"at 127.0.0.1:{new.port}" in node.broker._link.describe() for node in (a, b))
    finally:
        for node in started:
            await node.stop()
        sentinel.close()
