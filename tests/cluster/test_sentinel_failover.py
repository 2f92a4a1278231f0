"""Redis failover through Sentinel: a real master, a replica and three Sentinels (tests/sentinel_cluster.py),
two `fastpush serve` nodes given `redis+sentinel://` (one in its config file, one in $FASTPUSH_REDIS_URL),
a client on each node, a REST sender on each node. The master is SIGKILLed (a crash), or Sentinel is
told to fail over while it runs (maintenance: `SENTINEL FAILOVER`); the test measures how long until
sends succeed again (printed), and checks what the nodes promise:

- every send answered 202, before, during and after the failover, reaches both clients, in order;
  any other answer is a 503 (the sender is told; such a send may or may not have reached them);
- the last send answered 202 before the kill reaches both clients (accepted just before the switch);
- the clients stay connected; afterwards each node names the new master, the registry holds both
  clients, and a client that left while Redis was away is gone from it.

The master is killed between sends, never during one: see docs/operations.md ("Redis failover
through Sentinel") for the one message a kill in the middle of a send can cost.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time

import pytest

from tests.cli_process import ServeProcess
from tests.cluster.test_cluster import _endpoint, arest
from tests.conftest import ACCESS_KEY
from tests.helpers import JSON_V1, ServerView, connect, eventually
from tests.sentinel_cluster import MASTER_NAME, SentinelCluster, command

pytestmark = pytest.mark.timeout(240)

SENT_BEFORE = 20  # sends each sender makes before the kill
SENT_AFTER = 20  # 202s each sender collects after the failover
FAILOVER_DEADLINE = 60.0  # generous: Sentinel takes a few seconds here


@pytest.fixture
def sentinels(tmp_path):
    cluster = SentinelCluster(tmp_path)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def nodes(sentinels, tmp_path):
    config = tmp_path / "fastpush.toml"
    config.write_text(f'redisUrl = "{sentinels.url}"\n')
    started = []
    # The clients stay connected through the failover (checked below) however long a busy machine
    # makes it: not closed after the default --broker-loss-timeout.
    keep = ("--broker-loss-timeout", "60")
    try:
        started.append(ServeProcess("--config", str(config), *keep, env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY}))
        started.append(ServeProcess(*keep, env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY,
                                                "FASTPUSH_REDIS_URL": sentinels.url}))
        yield [ServerView(_endpoint(p.connection_string), ACCESS_KEY) for p in started]
    finally:
        for process in started:
            if process.proc.poll() is None:
                process.stop(signal.SIGTERM)


async def health(view: ServerView) -> dict:
    return json.loads((await arest(view, "GET", "/api/health"))[1])


class Sender:
    """Sends numbered messages to the hub through one node, one at a time, until `stopping`;
    pauses between sends while `gate` is clear."""

    def __init__(self, name: str, view: ServerView, hub: str, gate: asyncio.Event):
        self.name, self.view, self.hub, self.gate = name, view, hub, gate
        self.answers: list[tuple[str, int, float]] = []  # (message, status, when it was answered)
        self.idle = asyncio.Event()  # set while waiting at the gate
        self.stopping = False

    def accepted(self) -> list[str]:
        return [m for m, status, _ in self.answers if status == 202]

    def first_accepted_after(self, moment: float) -> float:
        return min(at for _, status, at in self.answers if status == 202 and at > moment) - moment

    def longest_without_acceptance(self) -> float:
        times = [at for _, status, at in self.answers if status == 202]
        return max(b - a for a, b in itertools.pairwise(times))

    async def run(self) -> None:
        n = 0
        while not self.stopping:
            if not self.gate.is_set():
                self.idle.set()
                await self.gate.wait()
                self.idle.clear()
            n += 1
            message = f"{self.name}-{n}"
            status, _ = await arest(self.view, "POST", f"/api/hubs/{self.hub}/:send", message.encode())
            self.answers.append((message, status, time.monotonic()))
            if status != 202:
                await asyncio.sleep(0.02)  # the node is waiting for Redis: do not spin


def subscribed_on(port: int, node_id: str) -> bool:
    """Whether node `node_id` listens on the Redis at `port` (its own channel has a subscriber)."""
    reply = command(port, "PUBSUB", "NUMSUB", f"fastpush:n:{node_id}")
    return isinstance(reply, list) and reply[1] >= 1


@pytest.mark.parametrize("switch", ["SIGKILL", "SENTINEL FAILOVER"])
async def test_a_failover_loses_no_accepted_message(sentinels, nodes, hub_name, capsys, switch):
    first, second = nodes
    node_ids = [(await health(view))["broker"]["node"] for view in nodes]
    clients = [await connect(first, hub_name, JSON_V1), await connect(second, hub_name, JSON_V1)]
    quiet_hub = hub_name + "_quiet"  # no sends there: its client reads nothing, so it closes at once
    leaver = await connect(second, quiet_hub, JSON_V1)  # leaves while Redis is away
    gate = asyncio.Event()
    gate.set()
    senders = [Sender("a", first, hub_name, gate), Sender("b", second, hub_name, gate)]
    tasks = [asyncio.create_task(s.run()) for s in senders]
    try:
        assert await eventually(lambda: all(len(s.accepted()) >= SENT_BEFORE for s in senders), 30)
        gate.clear()  # between sends: every sender's last send has its answer
        await asyncio.wait_for(asyncio.gather(*(s.idle.wait() for s in senders)), 30)
        last_before = [s.accepted()[-1] for s in senders]
        old_master, new_master = sentinels.master_port, sentinels.replica_port
        if switch == "SIGKILL":
            sentinels.kill(old_master)
        else:
            assert command(sentinels.sentinel_ports[0], "SENTINEL", "FAILOVER", MASTER_NAME) == b"OK"
        switched_at = time.monotonic()
        gate.set()

        if switch == "SIGKILL":  # then the outage lasts until Sentinel has promoted the replica
            async def degraded() -> bool:
                return (await health(second))["status"] == "degraded"
            assert await eventually(degraded, 10)
            await leaver.ws.close()
            assert (await health(second))["status"] == "degraded", "the leaver must leave while Redis is away"

        def both_moved() -> bool:
            return sentinels.master_now() == new_master and all(subscribed_on(new_master, n) for n in node_ids)
        assert await eventually(both_moved, FAILOVER_DEADLINE), "the nodes did not move to the new master"
        wanted = [len(s.accepted()) + SENT_AFTER for s in senders]
        assert await eventually(lambda: all(len(s.accepted()) >= n for s, n in zip(senders, wanted, strict=True)), 30)
        for sender in senders:
            sender.stopping = True
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        for task in tasks:
            task.cancel()

    answers = [a for s in senders for a in s.answers]
    assert {status for _, status, _ in answers} <= {202, 503}, answers
    with capsys.disabled():  # the figures belong in the test output
        refused = sum(1 for _, status, _ in answers if status == 503)
        print(f"\n{switch}: sends accepted again after {senders[0].first_accepted_after(switched_at):.2f} s (node a) / "
              f"{senders[1].first_accepted_after(switched_at):.2f} s (node b); longest time without an accepted "
              f"send {senders[0].longest_without_acceptance():.2f} / {senders[1].longest_without_acceptance():.2f} s; "
              f"{refused} sends answered 503")

    for client in clients:  # every 202, from both senders, in each sender's order; nothing else but 503s
        expected = {s.name: s.accepted() for s in senders}
        got: dict[str, list[str]] = {s.name: [] for s in senders}
        deadline = time.monotonic() + 30
        while any(got[name][-1:] != expected[name][-1:] for name in got) and time.monotonic() < deadline:
            message = await client.recv(timeout=max(0.1, deadline - time.monotonic()))
            assert message["type"] == "message", message  # no close, no system message: still connected
            got[message["data"].split("-")[0]].append(message["data"])
        for (name, accepted), last in zip(expected.items(), last_before, strict=True):
            received = [m for m in got[name] if m in set(accepted)]
            assert received == accepted, f"client {client.connection_id} missed {set(accepted) - set(received)}"
            assert last in received

    for view in nodes:
        report = await health(view)
        assert report["status"] == "healthy", report
        for client in clients:
            target = f"/api/hubs/{hub_name}/connections/{client.connection_id}"
            assert (await arest(view, "HEAD", target))[0] == 200
        if switch == "SIGKILL":
            gone = f"/api/hubs/{quiet_hub}/connections/{leaver.connection_id}"

            async def forgotten(view=view, gone=gone) -> bool:
                return (await arest(view, "HEAD", gone))[0] == 404
            assert await eventually(forgotten, 10), "a client that left during the outage is still registered"
