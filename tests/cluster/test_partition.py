"""A node cut off from Redis while its clients stay connected (issue 14, item 5).

Two fastpush nodes and redis-server run as separate hosts (network namespaces, tests/netns.py):
each node reaches Redis over its own veth link, and this test's clients reach each node over
another. Cutting node A's link to Redis (`ip link set ... down`: no reset, the connections just
go silent) must not lose an accepted message silently: A notices within its ping timeout and
answers sends 503, then after --broker-loss-timeout closes its clients with 1012 (their sessions
end, so nothing is replayed as if complete); B's clients get every message accepted anywhere.
After the link heals, A serves again."""
from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import signal
import subprocess
import time
from urllib.parse import urlsplit

import jwt
import pytest
import websockets

from tests.cli_process import WatchedServe
from tests.conftest import ACCESS_KEY
from tests.helpers import JSON_RELIABLE_V1, JSON_V1, ServerView, client_url, connect, eventually
from tests.netns import Hosts, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
LOSS_TIMEOUT = 2.0  # --broker-loss-timeout of the nodes
PORT = 8080  # each node's own, in its own namespace


def rest(view: ServerView, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    token = jwt.encode({"aud": view.endpoint + target, "exp": int(time.time()) + 60}, view.access_key.encode(),
                       algorithm="HS256")
    where = urlsplit(view.endpoint)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=15)
    try:
        conn.request(method, target, body=body, headers={"Authorization": f"Bearer {token}",
                                                         "Content-Type": "text/plain"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def arest(*args) -> tuple[int, bytes]:
    return await asyncio.to_thread(rest, *args)


class Listener:
    """Reads one client's frames until its socket closes; keeps the messages' data and the close."""

    def __init__(self, name: str, client):
        self.name, self.client = name, client
        self.data: list[str] = []
        self.system: list[dict] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.client.ws:
                message = json.loads(frame)
                if message["type"] == "message":
                    self.data.append(message["data"])
                    if "sequenceId" in message:  # a reliable client acknowledges, as the SDKs do
                        await self.client.send({"type": "sequenceAck", "sequenceId": message["sequenceId"]})
                else:
                    self.system.append(message)
        except websockets.ConnectionClosed:
            pass
        self.close_code, self.close_reason = self.client.ws.close_code, self.client.ws.close_reason or ""

    @property
    def closed(self) -> bool:
        return self.task.done()


class Sender:
    """Numbered sends to the hub through one node, one at a time, until `stopping`; between sends
    it waits while `gate` is clear (`idle` is set then: its last send has its answer)."""

    def __init__(self, name: str, view: ServerView, hub: str, gate: asyncio.Event):
        self.name, self.view, self.hub, self.gate = name, view, hub, gate
        self.answers: list[tuple[str, int, float]] = []  # (message, status, when answered)
        self.started: dict[str, float] = {}  # when each send began
        self.stopping = False
        self.idle = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    def accepted(self, after: float = 0.0) -> list[str]:
        return [m for m, status, at in self.answers if status == 202 and at > after]

    def sent_after(self, moment: float) -> list[str]:
        """Accepted, and sent after `moment` (a client connected by then must get it)."""
        return [m for m in self.accepted() if self.started[m] > moment]

    def refused(self, after: float = 0.0) -> list[str]:
        return [m for m, status, at in self.answers if status != 202 and at > after]

    async def _run(self) -> None:
        n = 0
        while not self.stopping and n < 5000:  # bounded: the test stops it long before
            if not self.gate.is_set():
                self.idle.set()
                await self.gate.wait()
                self.idle.clear()
            n += 1
            message = f"{self.name}-{n}"
            self.started[message] = time.monotonic()
            try:
                status, _ = await arest(self.view, "POST", f"/api/hubs/{self.hub}/:send", message.encode())
            except OSError:
                status = 0  # no answer at all: not accepted
            self.answers.append((message, status, time.monotonic()))
            await asyncio.sleep(0.05)


def in_order_prefix(received: list[str], accepted: list[str]) -> bool:
    """Whether `received` is exactly the first messages of `accepted`: nothing skipped before the end."""
    return received == accepted[:len(received)]


@pytest.fixture
def hosts():
    reason = unavailable()
    if reason:
        pytest.skip(f"cannot make network namespaces here: {reason}")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.fail("the cluster tests need redis-server on PATH (Debian: apt-get install redis-server)")
    made = Hosts()
    processes: list[subprocess.Popen] = []
    try:
        redis_ns, a_ns, b_ns = made.add("redis"), made.add("a"), made.add("b")
        _, a_to_redis = made.link(redis_ns, "10.9.1.1/30", a_ns, "10.9.1.2/30")
        made.link(redis_ns, "10.9.2.1/30", b_ns, "10.9.2.2/30")
        redis = subprocess.Popen([*made.exec_prefix(redis_ns), redis_server, "--port", "6379", "--bind", "0.0.0.0",
                                  "--protected-mode", "no", "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(redis)
        deadline = time.monotonic() + 20
        while subprocess.run([*made.exec_prefix(redis_ns), "redis-cli", "-p", "6379", "ping"],
                             capture_output=True, text=True, timeout=10).stdout.strip() != "PONG":
            assert time.monotonic() < deadline and redis.poll() is None, "redis-server did not start"
            time.sleep(0.1)
        nodes = []
        for ns, redis_address in ((a_ns, "10.9.1.1"), (b_ns, "10.9.2.1")):
            address, _ = made.front(ns)
            serve = WatchedServe("--host", "0.0.0.0", "--port", str(PORT), "--public-host", f"{address}:{PORT}",
                                 "--broker-loss-timeout", str(LOSS_TIMEOUT), prefix=made.exec_prefix(ns),
                                 env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY,
                                      "FASTPUSH_REDIS_URL": f"redis://{redis_address}:6379"})
            processes.append(serve.proc)
            nodes.append(ServerView(f"http://{address}:{PORT}", ACCESS_KEY))
        yield made, nodes, (a_ns, a_to_redis)
    finally:
        for proc in reversed(processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        made.remove()


async def test_a_node_cut_off_from_redis_tells_its_clients_and_loses_no_accepted_message(hosts, hub_name, capsys):
    made, (a, b), (a_ns, a_to_redis) = hosts
    listeners = [Listener(f"a{i}", await connect(a, hub_name, JSON_V1)) for i in range(3)]
    reliable = Listener("a-reliable", await connect(a, hub_name, JSON_RELIABLE_V1))
    on_a = [*listeners, reliable]
    on_b = [Listener(f"b{i}", await connect(b, hub_name, JSON_V1)) for i in range(2)]
    gate = asyncio.Event()
    gate.set()
    senders = {"a": Sender("a", a, hub_name, gate), "b": Sender("b", b, hub_name, gate)}
    try:
        assert await eventually(lambda: all(len(s.accepted()) >= 5 for s in senders.values()), 30)
        gate.clear()  # cut between sends, once every client has what was accepted so far
        await asyncio.wait_for(asyncio.gather(*(s.idle.wait() for s in senders.values())), 30)
        before_cut = {name: sender.accepted() for name, sender in senders.items()}
        assert await eventually(lambda: all(set(before_cut["a"] + before_cut["b"]) <= set(c.data)
                                            for c in on_a + on_b), 30), "a client missed a send before the cut"
        made.set_link(a_ns, a_to_redis, up=False)
        cut = time.monotonic()
        gate.set()

        # A notices the silent link, refuses sends, then closes every client with 1012.
        assert await eventually(lambda: senders["a"].refused(after=cut), 30), "A never refused a send"
        assert await eventually(lambda: all(c.closed for c in on_a), 30), "A kept clients while cut off"
        closed = time.monotonic()
        for listener in on_a:
            assert listener.close_code == 1012, (listener.name, listener.close_code, listener.close_reason)
            assert "lost the cluster broker" in listener.close_reason
        with pytest.raises(websockets.InvalidStatus) as refused:  # and admits no new client meanwhile
            await connect(a, hub_name, JSON_V1)
        assert refused.value.response.status_code == 503
        # The reliable client cannot take its session elsewhere: the node holding it is unreachable.
        # It is told so (a refused recovery), never handed a session missing what was sent meanwhile.
        recovery = client_url(b, hub_name) + (f"&awps_connection_id={reliable.client.connection_id}"
                                              f"&awps_reconnection_token={reliable.client.reconnection_token}")
        try:
            async with websockets.connect(recovery, subprotocols=[JSON_RELIABLE_V1]) as ws:
                hello = json.loads(await ws.recv())
                assert hello.get("connectionId") != reliable.client.connection_id, hello
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 503, exc.response.status_code
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1008, exc

        during = len(senders["b"].accepted())
        assert await eventually(lambda: len(senders["b"].accepted()) >= during + 5, 30), "B stopped accepting"
        made.set_link(a_ns, a_to_redis, up=True)
        healed = time.monotonic()
        assert await eventually(lambda: senders["a"].accepted(after=healed), 60), "A did not serve again"
        back = time.monotonic()
        late = Listener("a-after", await connect(a, hub_name, JSON_V1))  # A admits clients again
        joined = time.monotonic()
        assert await eventually(lambda: all(len(s.sent_after(joined)) >= 5 for s in senders.values()), 30)
    finally:
        for sender in senders.values():
            sender.stopping = True
        await asyncio.wait_for(asyncio.gather(*(s.task for s in senders.values())), 60)

    answers = [a for s in senders.values() for a in s.answers]
    assert {status for _, status, _ in answers} <= {202, 503}, answers
    with capsys.disabled():
        first_refusal = min(at for _, status, at in senders["a"].answers if status != 202 and at > cut)
        print(f"\npartition: A refused sends {first_refusal - cut:.2f} s after the cut, closed its clients "
              f"after {closed - cut:.2f} s (--broker-loss-timeout {LOSS_TIMEOUT:g}), served again "
              f"{back - healed:.2f} s after the link came back; "
              f"{len(senders['a'].refused(after=cut))} sends to A answered 503")

    everything = {m for s in senders.values() for m in s.accepted()}
    for listener in on_b:  # every accepted message, from either node, in each node's order
        assert await eventually(lambda c=listener: everything <= set(c.data), 30), (listener.name,
                                                                                   everything - set(listener.data))
        assert not listener.closed, (listener.name, listener.close_code)
        for name, sender in senders.items():
            received = [m for m in listener.data if m.startswith(name + "-")]
            assert received == sender.accepted(), (listener.name, set(sender.accepted()) - set(received))
    for listener in on_a:  # everything up to the cut, then told: closed, nothing skipped before that
        for name, sender in senders.items():
            received = [m for m in listener.data if m.startswith(name + "-")]
            assert in_order_prefix(received, sender.accepted()), (listener.name, received)
            assert received[:len(before_cut[name])] == before_cut[name]
    since_joined = {m for s in senders.values() for m in s.sent_after(joined)}
    assert await eventually(lambda: since_joined <= set(late.data), 30), since_joined - set(late.data)
    assert not late.closed
    for listener in [*on_b, late]:
        await listener.client.close()
        await listener.task
