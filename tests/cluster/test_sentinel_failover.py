"""Redis failover through Sentinel: a real master, a replica and three Sentinels (tests/sentinel_cluster.py),
two `fastpush serve` nodes given `redis+sentinel://` (one in its config file, one in $FASTPUSH_REDIS_URL),
a client on each node, a REST sender on each node. The master is SIGKILLed; the test measures how long
until sends succeed again (printed), and checks what the nodes promise:

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
import json
import signal
import time

import pytest

from tests.cli_process import ServeProcess
from tests.cluster.test_cluster import _endpoint, arest
from tests.conftest import ACCESS_KEY
from tests.helpers import JSON_V1, ServerView, connect, eventually
from tests.sentinel_cluster import SentinelCluster

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
    try:
        started.append(ServeProcess("--config", str(config), env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY}))
        started.append(ServeProcess(env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY, "FASTPUSH_REDIS_URL": sentinels.url}))
        yield [ServerView(_endpoint(p.connection_string), ACCESS_KEY) for p in started]
    finally:
        for process in started:
            if process.proc.poll() is None:
                process.stop(signal.SIGTERM)


async def health(view: ServerView) -> dict:
    return json.loads((await arest(view, "GET", "/api/health"))[1])


class Sender:
    """Sends numbered messages to the hub through one node, one at a time, until told to stop;
    pauses between sends while `gate` is clear."""

    def __init__(self, name: str, view: ServerView, hub: str, gate: asyncio.Event):
        self.name, self.view, self.hub, self.gate = name, view, hub, gate
        self.answers: list[tuple[str, int, float]] = []  # (message, status, when it was answered)
        self.idle = asyncio.Event()  # set while waiting at the gate
        self.wanted_after: float | None = None

    def accepted(self, since: float = 0.0) -> list[str]:
        return [m for m, status, at in self.answers if status == 202 and at >= since]

    async def run(self, kill_at: list[float]) -> None:
        n = 0
        while True:
            if not self.gate.is_set():
                self.idle.set()
                await self.gate.wait()
                self.idle.clear()
            if kill_at and len(self.accepted(kill_at[0])) >= SENT_AFTER:
                return
            n += 1
            message = f"{self.name}-{n}"
            status, _ = await arest(self.view, "POST", f"/api/hubs/{self.hub}/:send", message.encode())
            self.answers.append((message, status, time.monotonic()))
            if status != 202:
                await asyncio.sleep(0.02)  # the node is waiting for Redis: do not spin


async def test_killing_the_master_loses_no_accepted_message(sentinels, nodes, hub_name, capsys):
    first, second = nodes
    clients = [await connect(first, hub_name, JSON_V1), await connect(second, hub_name, JSON_V1)]
    quiet_hub = hub_name + "_quiet"  # no sends there: its client reads nothing, so it closes at once
    leaver = await connect(second, quiet_hub, JSON_V1)  # leaves while Redis is away
    gate = asyncio.Event()
    gate.set()
    senders = [Sender("a", first, hub_name, gate), Sender("b", second, hub_name, gate)]
    kill_at: list[float] = []
    tasks = [asyncio.create_task(s.run(kill_at)) for s in senders]
    try:
        assert await eventually(lambda: all(len(s.accepted()) >= SENT_BEFORE for s in senders), 30)
        gate.clear()  # between sends: every sender's last send has its answer
        await asyncio.wait_for(asyncio.gather(*(s.idle.wait() for s in senders)), 30)
        last_before = [s.accepted()[-1] for s in senders]
        old_master = sentinels.master_port
        sentinels.kill(old_master)
        kill_at.append(time.monotonic())
        gate.set()

        async def degraded() -> bool:
            return (await health(second))["status"] == "degraded"
        assert await eventually(degraded, 10)
        await leaver.ws.close()
        assert (await health(second))["status"] == "degraded", "the leaver must leave while Redis is away"

        await asyncio.wait_for(asyncio.gather(*tasks), FAILOVER_DEADLINE)
    finally:
        for task in tasks:
            task.cancel()

    answers = [a for s in senders for a in s.answers]
    assert {status for _, status, _ in answers} <= {202, 503}, answers
    recovery = {s.name: min(at for _, status, at in s.answers if status == 202 and at > kill_at[0]) - kill_at[0]
                for s in senders}
    refused = sum(1 for _, status, _ in answers if status == 503)
    with capsys.disabled():  # the figure belongs in the test output
        print(f"\nSentinel failover: sends succeed again {recovery['a']:.2f} s (node a) / {recovery['b']:.2f} s "
              f"(node b) after SIGKILL of the master; {refused} sends answered 503 meanwhile")

    for client in clients:  # every 202, from both senders, in each sender's order; nothing else but 503s
        expected = {s.name: s.accepted() for s in senders}
        got: dict[str, list[str]] = {s.name: [] for s in senders}
        deadline = time.monotonic() + 30
        while any(got[name][-1:] != expected[name][-1:] for name in got) and time.monotonic() < deadline:
            message = await client.recv(timeout=max(0.1, deadline - time.monotonic()))
            assert message["type"] == "message", message  # no close, no system message: still connected
            got[message["data"].split("-")[0]].append(message["data"])
        for name, accepted in expected.items():
            received = [m for m in got[name] if m in set(accepted)]
            assert received == accepted, f"client {client.connection_id} missed {set(accepted) - set(received)}"
            assert last_before[0 if name == "a" else 1] in received

    new_master = sentinels.master_now()
    assert new_master == sentinels.replica_port != old_master
    for view in nodes:
        report = await health(view)
        assert report["status"] == "healthy", report
    for view in nodes:
        for client in clients:
            target = f"/api/hubs/{hub_name}/connections/{client.connection_id}"
            assert (await arest(view, "HEAD", target))[0] == 200
        gone = f"/api/hubs/{quiet_hub}/connections/{leaver.connection_id}"

        async def forgotten(view=view, gone=gone) -> bool:
            return (await arest(view, "HEAD", gone))[0] == 404
        assert await eventually(forgotten, 10), "a client that left during the outage is still registered"
