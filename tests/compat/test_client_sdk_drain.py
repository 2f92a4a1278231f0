"""A rolling restart of `fastpush serve --workers 2` under load, with the official client SDKs: every
worker in turn gets SIGTERM, drains (closes its clients with 1012 and hands their reliable sessions
to the other worker as they recover there), exits, and the parent starts a fresh worker in its
place. Meanwhile a publisher sends numbered messages through REST without pause. Every client of
every installed SDK version must receive each message exactly once (in order where the SDK keeps
order), on the connection it started with, recovered at least once, never restarted."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import threading
import time

import jwt
import pytest

from tests.cli_process import WatchedServe
from tests.compat.conftest import CLIENT_DRIVERS
from tests.conftest import ACCESS_KEY
from tests.helpers import ServerView, client_url

pytestmark = pytest.mark.slow

CLIENTS_PER_DRIVER = 2
GAP_SECONDS = 0.005  # between two sends: about 100 a second here
SETTLE_SECONDS = 1.0  # of publishing before the first restart and after the last
DELIVERY_SECONDS = 30.0  # for the last messages to reach every client, after the publisher stops
RETRYABLE = (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)


class Publisher(threading.Thread):
    """Numbered text messages to group g through REST, one connection each, one after another. A
    request is sent again only when its connection failed before any answer: a drained worker
    answers every request it has read, so a retry can never make a duplicate unless it does not."""

    def __init__(self, view: ServerView, hub: str):
        super().__init__(name="publisher", daemon=True)
        self.view, self.target = view, f"/api/hubs/{hub}/groups/g/:send?api-version=2024-12-01"
        self.sent = 0
        self.retries = 0
        self.failure: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._send(str(self.sent).encode())
                self.sent += 1
                time.sleep(GAP_SECONDS)
        except BaseException as exc:  # reported by the test
            self.failure = exc

    def _send(self, body: bytes) -> None:
        deadline = time.monotonic() + 10
        while True:
            token = jwt.encode({"aud": self.view.endpoint + self.target, "exp": int(time.time()) + 60},
                               ACCESS_KEY.encode(), algorithm="HS256")
            conn = http.client.HTTPConnection("127.0.0.1", self.view.port, timeout=10)
            try:
                conn.request("POST", self.target, body=body,
                             headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
                response = conn.getresponse()
                assert response.status == 202, (response.status, response.read())
                return
            except RETRYABLE:
                if time.monotonic() > deadline:
                    raise
                self.retries += 1
                time.sleep(0.01)
            finally:
                conn.close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _rolling_restart(serve: WatchedServe, pids: list[int]) -> list[int]:
    """SIGTERM each worker; wait until it has exited and its replacement serves; the new pids."""
    replacements = []
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        started = await asyncio.to_thread(serve.wait_for, rf"worker {pid} is draining; started worker (\d+)")
        new = int(started.group(1))
        await asyncio.to_thread(serve.wait_for, rf"worker {new} is serving")
        deadline = time.monotonic() + 30
        while not _gone(pid):
            assert time.monotonic() < deadline, f"worker {pid} did not exit"
            await asyncio.sleep(0.05)
        replacements.append(new)
    return replacements


# The Python SDK's sequenceAck thread dies with ConnectionResetError when a close catches it
# mid-send (it has no except clause); the recovered connection starts a new one.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_rolling_restart_of_every_worker_loses_and_repeats_nothing(redis_server, _client_drivers_closed):
    serve = WatchedServe("--workers", "2", "--redis-url", redis_server.url, "--log-format", "json",
                         env={"FASTPUSH_ACCESS_KEY": ACCESS_KEY})
    hub = "drain_" + str(os.getpid())
    clients = []
    publisher = None
    try:
        pids = [int(p) for p in serve.wait_for(r"\(pids (\d+), (\d+)\)").groups()]
        view = ServerView(serve.connection_string.split(";")[0].split("=", 1)[1], ACCESS_KEY)
        for driver in CLIENT_DRIVERS:
            for _ in range(CLIENTS_PER_DRIVER):
                client = await driver.client(client_url(view, hub, groups=["g"]), "reliable")
                await client.start()
                clients.append(client)
        publisher = Publisher(view, hub)
        publisher.start()
        await asyncio.sleep(SETTLE_SECONDS)
        replacements = await _rolling_restart(serve, pids)
        await asyncio.sleep(SETTLE_SECONDS)
        publisher.stopping.set()
        await asyncio.to_thread(publisher.join, 15)
        assert publisher.failure is None, publisher.failure
        sent = publisher.sent

        received: dict[int, list] = {i: [] for i in range(len(clients))}
        others: dict[int, list] = {i: [] for i in range(len(clients))}

        async def drain_events(i: int) -> None:
            deadline = time.monotonic() + DELIVERY_SECONDS
            while len(received[i]) < sent and time.monotonic() < deadline:
                try:
                    event = await clients[i].event(timeout=max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if event.message is not None:
                    received[i].append((event.message.sequence_id, event.message.data))
                else:
                    others[i].append(event.kind)
        await asyncio.gather(*(drain_events(i) for i in range(len(clients))))

        moved = {json.loads(line)["connection_id"] for line in serve.lines()
                 if line.startswith("{") and json.loads(line).get("event") == "reconnected"}
        expected = [str(n) for n in range(sent)]
        drains = [json.loads(line) for line in serve.lines()
                  if line.startswith("{") and json.loads(line).get("event") == "drained"]
        print(f"\nrolling restart of workers {pids} -> {replacements}: {sent} messages, {publisher.retries} "
              f"REST retries, {len(clients)} clients; drains (seconds, connections left): "
              f"{[(d['seconds'], d['left']) for d in drains]}")
        for i, client in enumerate(clients):
            data = [d for _, d in received[i]]
            missing, duplicates = len(set(expected) - set(data)), len(data) - len(set(data))
            print(f"{client.driver}: {len(data)} received, {missing} lost, {duplicates} duplicated, "
                  f"other events {others[i]}, moved {client.connection_id in moved}")
            assert (missing, duplicates) == (0, 0), client.driver
            assert sorted(data, key=int) == expected
            if client.driver.events_in_order:
                assert data == expected, client.driver
            assert others[i] == [], f"{client.driver} did not simply continue: {others[i]}"
            assert client.connection_id in moved, f"{client.driver}'s session was never handed over"
        assert serve.proc.poll() is None  # the parent runs on, with its two new workers
    finally:
        if publisher is not None:
            publisher.stopping.set()
        for client in clients:
            await client.dispose()
        if serve.proc.poll() is None:
            serve.stop(signal.SIGTERM)
    assert serve.proc.returncode == 0
