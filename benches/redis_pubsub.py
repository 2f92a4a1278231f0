"""How much pub/sub one Redis carries for fastpush: `python -m benches.redis_pubsub`.

Each "node" is a process doing what a fastpush node does with Redis: one subscriber connection on
the hub's channel (`fastpush:h:{hub}`, where every node with clients in the hub listens) and one
pipelined connection publishing fastpush's real envelope for a REST send to the hub (an
`ops.SendToAll` in a bus `Envelope`, encoded by fastpush). Both sockets are driven lean (packed
by hand, counted without decoding), so that Redis, not Python, is what runs out first. Each
message published is written by Redis once per node: K nodes publishing P messages/s make Redis
deliver K x P per second. A node publishes no further ahead of what it has received than
BACKLOG_BYTES: past its output buffer limit for subscribers (32 MiB by default) Redis would
disconnect the subscriber instead, as it would a fastpush node that cannot keep up.

For each node count and payload size, on a fresh redis-server:

- saturation: every node publishes for `--seconds` with `--window` PUBLISHes in flight; the
  table gives messages published per second (all nodes), deliveries per second (all subscriber
  sockets), Redis' CPU (share of one core: near 100 % means Redis is the limit, else the load side
  is, or the machine is busy with other work), Redis' CPU time per message published (its
  deliveries included: what a core of Redis can carry follows from it, however busy the machine
  was) and publish-to-receive latency under that load;
- light load: `--light-rate` messages/s in all, the latency of a message when Redis is not busy.

Latency is measured with CLOCK_MONOTONIC, stamped in the payload by the publishing node and read by
every subscribing node. Nodes and Redis share this machine's cores, so read the figures with the
CPU column and the machine line printed first.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import tempfile
import time
from array import array
from pathlib import Path

import hiredis
import msgspec
import uvloop

from fastpush import ops
from fastpush.broker.base import LocalHub
from fastpush.broker.redis import RedisBroker
from fastpush.broker.redis.bus import OP, Envelope, encode_envelope
from fastpush.protocol.payload import DataType, Payload

from .environment import machine
from .procs import Children, cpu_seconds, plan_cores
from .redis_server import RedisServer, missing
from .stats import percentile

HUB = "bench"
CHANNEL = f"fastpush:h:{HUB}".encode()
STAMP = b"\x00\x01TS"  # marks the 8-byte send time inside a payload
MAX_SAMPLES = 20_000  # latency samples a node reports (at most one per read)
WINDOW_BYTES = 1 << 20  # at most this many bytes of PUBLISHes in flight per node, whatever --window says
BACKLOG_BYTES = 4 << 20  # how far a node publishes ahead of what it has received (see above)
DRAIN_SECONDS = 20.0  # how long a subscriber waits for the last message after publishing ends


def envelope(payload_bytes: int, stamped: bool = True) -> bytes:
    """fastpush's envelope for a REST send to the hub of `payload_bytes` bytes; room for the send
    time in it if `stamped` (the same size without)."""
    head = STAMP if stamped else b"x" * len(STAMP)
    data = head + bytes(8) + b"x" * max(0, payload_bytes - len(STAMP) - 8)
    op = ops.SendToAll(HUB, Payload(DataType.TEXT, data))
    return encode_envelope(Envelope(OP, 0, None, ops.encode(op)))


# --- one node (a child process) -----------------------------------------------------------------
MESSAGE = b"$7\r\nmessage\r\n"  # starts every pub/sub message Redis writes (after its *3)
END = b"\r\n$3\r\nEND\r\n"  # a node's last message: it has published everything


class Subscriber:
    """A node's subscriber socket, read as raw bytes: messages are counted, not decoded, and the
    oldest whole stamp in each read is one latency sample, so the reading side keeps up with Redis
    (a node decoding every envelope in Python would be the limit here, not Redis)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, nodes: int) -> None:
        self._reader, self._writer = reader, writer  # the writer too: dropping it would close the socket
        self._nodes = nodes
        self.count = 0
        self.latencies = array("q")

    async def run(self) -> None:
        tail, ends = b"", 0
        while ends < self._nodes:
            data = await self._reader.read(1 << 20)
            if not data:
                raise ConnectionError("Redis closed the subscriber connection")
            now = time.monotonic_ns()
            window = tail + data
            self.count += window.count(MESSAGE)
            ends += window[len(tail) - len(END) + 1 if tail else 0:].count(END)
            at = window.find(STAMP)
            if 0 <= at <= len(window) - len(STAMP) - 8:
                self.latencies.append(now - struct.unpack_from("<q", window, at + len(STAMP))[0])
            tail = window[-(len(MESSAGE) - 1):]  # a marker split between two reads is counted once
        self.count -= self._nodes  # the END messages


async def subscribe(port: int, nodes: int) -> Subscriber:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(hiredis.pack_command((b"SUBSCRIBE", CHANNEL)))
    confirmation = b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(CHANNEL), CHANNEL)
    assert await reader.readexactly(len(confirmation)) == confirmation
    return Subscriber(reader, writer, nodes)


class Publisher:
    """PUBLISH pipelined on one socket in batches packed once (the first message of a batch carries
    the send time): the load side must outrun Redis, which fastpush's own command connection (a
    future per command) cannot on this machine."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload_bytes: int,
                 batch: int) -> None:
        self._reader, self._writer = reader, writer
        stamped, plain = (_publish(envelope(payload_bytes, stamp)) for stamp in (True, False))
        self._batches = {1: bytearray(stamped), batch: bytearray(stamped + plain * (batch - 1))}
        self._stamp_at = stamped.find(STAMP) + len(STAMP)
        self._parser = hiredis.Reader()
        self.sent = self.outstanding = 0

    def send(self, count: int) -> None:
        """`count`: 1, or the batch size."""
        batch = self._batches[count]
        struct.pack_into("<q", batch, self._stamp_at, time.monotonic_ns())
        self._writer.write(batch)
        self.sent += count
        self.outstanding += count

    def send_end(self) -> None:
        self._writer.write(_publish(b"END"))

    async def replies(self, outstanding: int) -> None:
        """Read replies until no more than `outstanding` are awaited."""
        while self.outstanding > outstanding:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("Redis closed the connection")
            self._parser.feed(data)
            while self._parser.gets() is not False:
                self.outstanding -= 1


def _publish(message: bytes) -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL, len(message), message)


async def node(port: int, nodes: int, payload_bytes: int, seconds: float, window: int, rate: float) -> None:
    subscriber = await subscribe(port, nodes)
    window = max(2, min(window, WINDOW_BYTES // len(envelope(payload_bytes))))
    publisher = Publisher(*await asyncio.open_connection("127.0.0.1", port), payload_bytes, window // 2)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    receiving = asyncio.ensure_future(subscriber.run())
    backlog = max(window, BACKLOG_BYTES // len(envelope(payload_bytes)))
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        if rate:
            await asyncio.sleep(max(0.0, start + publisher.sent / rate - now))
            publisher.send(1)
            await publisher.replies(0)
        elif publisher.sent * nodes - subscriber.count > backlog:
            await asyncio.sleep(0.0005)  # let the subscriber catch up
        else:
            publisher.send(window // 2)
            await publisher.replies(window // 2)
    await publisher.replies(0)
    publish_seconds = time.monotonic() - start
    publisher.send_end()
    await asyncio.wait_for(receiving, DRAIN_SECONDS)  # until every node's END
    step = max(1, len(subscriber.latencies) // MAX_SAMPLES)
    print(json.dumps({"published": publisher.sent, "publish_seconds": publish_seconds, "received": subscriber.count,
                      "samples": list(subscriber.latencies[::step])}), flush=True)


# --- the orchestrator ---------------------------------------------------------------------------
async def run_case(nodes: int, payload_bytes: int, args: argparse.Namespace, rate: float) -> dict:
    cores = plan_cores()
    with tempfile.TemporaryDirectory() as scratch:
        children = Children(Path(scratch))
        try:
            # by default a master waits 5 s (repl-diskless-sync-delay) for more replicas before it
            # syncs the first; there is only one, and nothing is measured before it is online
            redis = await RedisServer.start(children, cores.server_cpus, "--repl-diskless-sync-delay", "0")
            if args.replica:  # the Sentinel pair: the master also writes every PUBLISH to its replica
                await RedisServer.start(children, cores.load or cores.cpus, "--replicaof", "127.0.0.1",
                                        str(redis.port), name="redis-replica")
                await _replica_linked(redis.port)
            procs = [await children.spawn(f"node{i}", [sys.executable, "-m", "benches.redis_pubsub", "--node",
                                                        str(redis.port), str(nodes), str(payload_bytes),
                                                        str(args.seconds), str(args.window), str(rate / nodes)],
                                          cores.load, Path.cwd())
                     for i in range(nodes)]
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                if line.strip() != b"ready":
                    raise RuntimeError(f"a node did not start: {line!r}\n{children.log_tail('node0')}")
            cpu_before, wall_before = cpu_seconds(redis.pid), time.monotonic()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
            results = []
            for proc in procs:
                assert proc.stdout is not None
                output = await asyncio.wait_for(proc.stdout.read(), args.seconds + DRAIN_SECONDS + 30)  # to its exit
                if not output:
                    raise RuntimeError(f"a node failed:\n{children.log_tail(f'node{procs.index(proc)}')}")
                results.append(json.loads(output.splitlines()[-1]))
            redis_cpu = (cpu_seconds(redis.pid) - cpu_before) / (time.monotonic() - wall_before)
        finally:
            await children.close()
    seconds = max(r["publish_seconds"] for r in results)
    published = sum(r["published"] for r in results)
    samples = sorted(s for r in results for s in r["samples"])
    return {"nodes": nodes, "payload_bytes": payload_bytes, "envelope_bytes": len(envelope(payload_bytes)),
            "published_per_s": published / seconds, "delivered_per_s": sum(r["received"] for r in results) / seconds,
            "lost": published * nodes - sum(r["received"] for r in results), "redis_cpu": redis_cpu,
            "redis_us_per_publish": redis_cpu * seconds / published * 1e6,
            "p50_ms": percentile(samples, 50) / 1e6, "p99_ms": percentile(samples, 99) / 1e6}


# --- what the registry costs in Redis ----------------------------------------------------------
class _Member(msgspec.Struct, frozen=True):
    connection_id: str
    user_id: str | None
    roles: frozenset[str]
    groups: frozenset[str]


class _Handler:
    """The node, as the broker sees it, holding nothing: the registry is written directly."""

    def apply(self, op: ops.Op) -> object:
        return None

    def answer(self, question: ops.Query) -> object:
        return None

    def hand_over(self, hub: str, connection_id: str, token: str | None, subprotocol: str | None) -> None:
        return None

    def local_hubs(self) -> list[LocalHub]:
        return []


async def registry_cost(connections: int, groups: int) -> dict:
    """Redis memory and commands for `connections` registered connections (each with a user and
    `groups` groups), as one node writes them when its clients connect."""
    cores = plan_cores()
    with tempfile.TemporaryDirectory() as scratch:
        children = Children(Path(scratch))
        try:
            redis = await RedisServer.start(children, cores.server_cpus)
            broker = RedisBroker(redis.url)
            await broker.start(_Handler())
            before = await _info(redis.port)
            for i in range(connections):
                member = _Member(f"conn-{i:08d}", f"user-{i % (connections // 2 or 1)}", frozenset(),
                                 frozenset(f"group-{(i + g) % 1000}" for g in range(groups)))
                broker.connection_added(HUB, member)
                for group in member.groups:
                    broker.group_joined(HUB, member, group, first=False)
                if i % 1000 == 999:  # a question on the same socket: answered once the writes before it are done
                    await broker.ask(ops.ConnectionExists(HUB, "none"))
            await broker.ask(ops.ConnectionExists(HUB, "none"))
            after = await _info(redis.port)
            await broker.stop()
        finally:
            await children.close()
    memory = int(after["used_memory"]) - int(before["used_memory"])
    commands = int(after["total_commands_processed"]) - int(before["total_commands_processed"])
    return {"connections": connections, "groups_each": groups, "memory_bytes": memory,
            "bytes_per_connection": memory / connections, "commands_per_connection": commands / connections}


async def _info(port: int) -> dict[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(hiredis.pack_command((b"INFO",)))
    parser = hiredis.Reader()
    while (reply := parser.gets()) is False:
        parser.feed(await reader.read(65536))
    writer.close()
    return dict(line.split(":", 1) for line in reply.decode().splitlines() if ":" in line)


async def _replica_linked(port: int) -> None:
    """Until the master at `port` has its replica online (bounded)."""
    async with asyncio.timeout(30):
        while "state=online" not in (await _info(port)).get("slave0", ""):
            await asyncio.sleep(0.05)


def _list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.redis_pubsub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=_list, default=[1, 2, 4], help="publishing and subscribing nodes (1,2,4)")
    parser.add_argument("--payload-bytes", type=_list, default=[100, 1000, 16000],
                        help="payload sizes (100,1000,16000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="publishing time per case (3)")
    parser.add_argument("--window", type=int, default=1024, help="PUBLISHes in flight per node at saturation (1024)")
    parser.add_argument("--light-rate", type=float, default=1000.0, help="messages/s in all, light load (1000)")
    parser.add_argument("--replica", action="store_true",
                        help="give the Redis a replica, as under Sentinel (the replica on the load side's CPU)")
    parser.add_argument("--json-out", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--registry", type=int, metavar="N",
                        help="instead: Redis memory and commands for N registered connections (0, 1 and 5 groups)")
    parser.add_argument("--node", nargs=6, help=argparse.SUPPRESS)  # a child: port nodes size seconds window rate
    args = parser.parse_args()
    if args.node:
        port, nodes, size, seconds, window, rate = args.node
        uvloop.run(node(int(port), int(nodes), int(size), float(seconds), int(window), float(rate)))
        return
    if why := missing():
        sys.exit(f"benches.redis_pubsub: {why}")
    if args.registry:
        print(f"{'connections':>11} {'groups each':>11} {'Redis memory':>13} {'per connection':>15} "
              f"{'commands/conn':>13}")
        for groups in (0, 1, 5):
            cost = uvloop.run(registry_cost(args.registry, groups))
            print(f"{cost['connections']:>11,} {groups:>11} {cost['memory_bytes'] / 2**20:>10.1f} MiB "
                  f"{cost['bytes_per_connection']:>13,.0f} B {cost['commands_per_connection']:>13.1f}")
        return
    print(f"machine: {machine()['cpu']}, {os.cpu_count()} CPUs (shared: other work runs here too); "
          f"Redis pinned as the benches pin servers: {plan_cores().describe()}"
          f"{'; the master has a replica' if args.replica else ''}")
    header = (f"{'nodes':>5} {'payload':>8} {'on wire':>8} {'published/s':>12} {'delivered/s':>12} {'Redis CPU':>9} "
              f"{'Redis us/pub':>12} {'p50 ms':>7} {'p99 ms':>7}   at {args.light_rate:g}/s: "
              f"{'p50 ms':>7} {'p99 ms':>7}")
    print(header)
    rows = []
    for nodes in args.nodes:
        for size in args.payload_bytes:
            busy = uvloop.run(run_case(nodes, size, args, 0.0))
            light = uvloop.run(run_case(nodes, size, args, args.light_rate))
            busy["light_p50_ms"], busy["light_p99_ms"] = light["p50_ms"], light["p99_ms"]
            rows.append(busy)
            lost = f"  ({busy['lost']} not delivered)" if busy["lost"] else ""
            print(f"{nodes:>5} {size:>8} {busy['envelope_bytes']:>8} {busy['published_per_s']:>12,.0f} "
                  f"{busy['delivered_per_s']:>12,.0f} {busy['redis_cpu']:>9.0%} {busy['redis_us_per_publish']:>12.2f} "
                  f"{busy['p50_ms']:>7.2f} {busy['p99_ms']:>7.2f}   {'':>10}{light['p50_ms']:>7.2f} "
                  f"{light['p99_ms']:>7.2f}{lost}",
                  flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
