"""A rolling restart of `fastpush serve --workers N`, measured: N reliable clients (raw WebSockets
speaking json.reliable.webpubsub.azure.v1 and recovering as the SDKs do), a REST publisher sending
numbered messages to their group without pause, and SIGTERM to each worker in turn (the next once
the parent says its replacement serves and the old one has exited).

    python -m benches.drain --clients 2000 --workers 2

Prints, per restarted worker: how long its drain took (its own log line), how many clients it
closed, how many of them recovered elsewhere, and the time from its SIGTERM until each of them had
read its `connected` message on its new worker (p50, p99, max); then the messages sent and, over
all clients, how many were lost, received twice or out of order (all must be 0). The clients and
the publisher run in this one Python process, on the same cores as the server: with many clients
they, not the server, set the pace (compare the drain time with the recovery times).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import websockets

from .stats import percentile

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
HUB = "drainbench"
RELIABLE = "json.reliable.webpubsub.azure.v1"
RECOVERY_SECONDS = 30.0  # as the SDKs: give up recovering after this long
ROOT = Path(__file__).resolve().parents[1]


class Client:
    """One reliable client: the highest sequenceId seen, what it received, and when it last
    (re)connected."""

    def __init__(self, url: str, base: str):
        self.url, self.base = url, base
        self.seen = 0
        self.data: list[int] = []
        self.connection_id = self.token = ""
        self.dropped_at: list[float] = []  # when the server closed or dropped its socket
        self.recovered_at: list[float] = []

    async def run(self, stop: asyncio.Event) -> None:
        url = self.url
        while not stop.is_set():
            try:
                async with websockets.connect(url, subprotocols=[RELIABLE], max_size=None,
                                              open_timeout=10) as ws:
                    acker = asyncio.create_task(self._ack(ws))
                    try:
                        async for frame in ws:
                            self._take(json.loads(frame))
                    finally:
                        acker.cancel()
                        self.dropped_at.append(time.monotonic())
                    if ws.close_code == 1008:
                        raise RuntimeError(f"session refused: {ws.close_reason}")
            except (OSError, websockets.InvalidStatus, websockets.ConnectionClosed, TimeoutError):
                await asyncio.sleep(0.2)  # a refused or failed attempt: try again, as the SDKs do
            url = self.base + f"&awps_connection_id={self.connection_id}&awps_reconnection_token={self.token}"

    def _take(self, message: dict) -> None:
        if message.get("type") == "system" and message.get("event") == "connected":
            if self.connection_id:
                assert message["connectionId"] == self.connection_id, "a new connection, not a recovery"
                self.recovered_at.append(time.monotonic())
            self.connection_id, self.token = message["connectionId"], message["reconnectionToken"]
        elif message.get("type") == "message" and message["sequenceId"] > self.seen:
            self.seen = message["sequenceId"]
            self.data.append(int(message["data"]))

    async def _ack(self, ws) -> None:
        while True:
            await asyncio.sleep(1.0)
            await ws.send(json.dumps({"type": "sequenceAck", "sequenceId": self.seen}))


def _token(aud: str, **claims) -> str:
    return jwt.encode({"aud": aud, "exp": int(time.time()) + 3600, **claims}, KEY.encode(), algorithm="HS256")


def _publish(endpoint: str, stop: threading.Event, sent: list[int], gap: float) -> None:
    """In a thread: numbered sends on one keep-alive connection, opened again when the server
    closes it (a draining worker answers what it has read, then closes): a send is repeated only
    when its connection failed before it was answered."""
    target = f"/api/hubs/{HUB}/groups/g/:send?api-version=2024-12-01"
    host, port = endpoint.split("://")[1].rsplit(":", 1)
    auth = {"Authorization": f"Bearer {_token(endpoint + target)}", "Content-Type": "text/plain"}
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    n = 0
    while not stop.is_set():
        for _ in range(100):
            try:
                conn.request("POST", target, body=str(n).encode(), headers=auth)
                response = conn.getresponse()
                response.read()
                assert response.status == 202, response.status
                if response.will_close:
                    conn.close()
                break
            except (ConnectionError, http.client.RemoteDisconnected):
                conn.close()
                time.sleep(0.01)
        else:
            raise RuntimeError("the publisher could not reach any worker")
        sent.append(n)
        n += 1
        time.sleep(gap)
    conn.close()


class Serve:
    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "fastpush", "serve", *args], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "FASTPUSH_ACCESS_KEY": KEY, "PYTHONPATH": str(ROOT)})
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    async def read(self, log: Path | None) -> None:
        """Keep reading (a full pipe would block the server's log), into `log` too if given."""
        with open(log, "w") if log is not None else contextlib.nullcontext() as copy:
            while line := await asyncio.to_thread(self.proc.stdout.readline):
                self.lines.append(line)
                self.changed.set()
                if copy is not None:
                    copy.write(line)

    async def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if found := regex.search(line):
                    return found
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {pattern!r} in the server's output:\n{''.join(self.lines[-30:])}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1)

    def events(self, event: str) -> list[dict]:
        return [r for r in (json.loads(line) for line in self.lines if line.startswith("{")) if r.get("event") == event]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def main(clients: int, workers: int, rate: float, log: Path | None) -> int:
    """The run; its exit code: 1 if a client lost, repeated or reordered a message."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        redis_port = probe.getsockname()[1]
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                              "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    serve = Serve(["--port", "0", "--workers", str(workers), "--redis-url", f"redis://127.0.0.1:{redis_port}",
                   "--log-format", "json", "--max-connections-per-ip", str(clients + 100)])
    reader = asyncio.create_task(serve.read(log))
    stop = asyncio.Event()
    try:
        endpoint = (await serve.wait_for(r"Endpoint=([^;]+);")).group(1)
        pids = [int(p) for p in (await serve.wait_for(r"\(pids ([\d, ]+)\)")).group(1).split(", ")]
        base = "ws" + endpoint[4:] + f"/client/hubs/{HUB}?access_token={_token(endpoint + '/client/hubs/' + HUB)}"
        url = "ws" + endpoint[4:] + f"/client/hubs/{HUB}?access_token=" + _token(
            endpoint + "/client/hubs/" + HUB, **{"webpubsub.group": ["g"]})
        population = [Client(url, base) for _ in range(clients)]
        tasks = []
        for i in range(0, clients, 200):  # connect in batches, not all in one instant
            tasks += [asyncio.create_task(c.run(stop)) for c in population[i:i + 200]]
            while sum(bool(c.connection_id) for c in population[:i + 200]) < min(i + 200, clients):
                await asyncio.sleep(0.05)
        sent: list[int] = []
        publishing = threading.Event()
        publisher = asyncio.create_task(asyncio.to_thread(_publish, endpoint, publishing, sent, 1 / rate))
        await asyncio.sleep(2)
        print(f"{clients} reliable clients on {workers} workers, {rate:g} REST sends/s to their group")
        print(f"{'worker':>8} {'drain s':>8} {'clients':>8} {'recovered':>10} {'p50 s':>7} {'p99 s':>7} {'max s':>7}")
        for pid in pids:
            before = {id(c): len(c.recovered_at) for c in population}
            signalled = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            new = int((await serve.wait_for(rf"worker {pid} is draining; started worker (\d+)")).group(1))
            await serve.wait_for(rf"worker {new} is serving")
            while not _gone(pid):
                await asyncio.sleep(0.05)
            drained = serve.events("drained")[-1]
            # Its clients: those the server closed since the signal; wait until each is back.
            affected = [c for c in population if c.dropped_at and c.dropped_at[-1] >= signalled]
            deadline = time.monotonic() + RECOVERY_SECONDS
            while (any(len(c.recovered_at) <= before[id(c)] for c in affected)
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.05)
            moved = [c.recovered_at[before[id(c)]] - signalled for c in affected
                     if len(c.recovered_at) > before[id(c)]]
            figures = [percentile(sorted(moved), q) for q in (50, 99, 100)] if moved else [0.0] * 3
            print(f"{pid:>8} {drained['seconds']:>8.2f} {len(affected):>8} {len(moved):>10} {figures[0]:>7.3f} "
                  f"{figures[1]:>7.3f} {figures[2]:>7.3f}")
        await asyncio.sleep(2)
        publishing.set()
        await publisher
        deadline = time.monotonic() + RECOVERY_SECONDS
        while any(len(c.data) < len(sent) for c in population) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        expected = set(sent)
        lost = sum(len(expected - set(c.data)) for c in population)
        repeated = sum(len(c.data) - len(set(c.data)) for c in population)
        disordered = sum(c.data != sorted(c.data) for c in population)
        print(f"{len(sent)} messages sent; over all clients: {lost} lost, {repeated} received twice, "
              f"{disordered} clients out of order")
        for task in tasks:
            task.cancel()
        return 1 if lost or repeated or disordered else 0
    finally:
        stop.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.proc.pid, signal.SIGINT)  # at once: the measuring is over
        await asyncio.to_thread(serve.proc.wait, 60)
        await reader
        redis.terminate()
        redis.wait(10)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=100.0, help="REST sends per second (default 100)")
    parser.add_argument("--server-log", type=Path, help="write the server's output (JSON log lines) there")
    options = parser.parse_args()
    sys.exit(asyncio.run(main(options.clients, options.workers, options.rate, options.server_log)))


if __name__ == "__main__":
    cli()
