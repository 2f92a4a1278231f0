"""A rolling restart of `fastpush serve --workers N`, measured: N reliable clients (raw WebSockets
speaking json.reliable.webpubsub.azure.v1 and recovering as the SDKs do), a REST publisher sending
numbered messages to their group without pause, and SIGTERM to each worker in turn (the next once
the parent says its replacement serves and the old one has exited).

    python -m benches.drain --clients 2000 --workers 2

Prints, per restarted worker: how long its drain took (its own log), how many sessions it handed
over, and the time from its SIGTERM until its last client had recovered elsewhere (p50, p99, max
over those clients); then the messages sent and, over all clients, how many were lost or
received twice (both must be 0). Everything runs on this machine: the load shares its cores.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


async def _publish(endpoint: str, stop: asyncio.Event, sent: list[int], gap: float) -> None:
    target = f"/api/hubs/{HUB}/groups/g/:send?api-version=2024-12-01"

    def send(n: int) -> None:
        for _ in range(100):
            request = urllib.request.Request(endpoint + target, data=str(n).encode(), method="POST", headers={
                "Authorization": f"Bearer {_token(endpoint + target)}", "Content-Type": "text/plain"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 202
                    return
            except urllib.error.URLError as exc:  # refused before it was sent: safe to send again
                if not isinstance(exc.reason, ConnectionRefusedError | ConnectionResetError):
                    raise
                time.sleep(0.01)
        raise RuntimeError("the publisher could not reach any worker")
    n = 0
    while not stop.is_set():
        await asyncio.to_thread(send, n)
        sent.append(n)
        n += 1
        await asyncio.sleep(gap)


class Serve:
    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "fastpush", "serve", *args], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "FASTPUSH_ACCESS_KEY": KEY})
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    async def read(self) -> None:
        while line := await asyncio.to_thread(self.proc.stdout.readline):
            self.lines.append(line)
            self.changed.set()

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


async def main(clients: int, workers: int, rate: float) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        redis_port = probe.getsockname()[1]
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    serve = Serve(["--port", "0", "--workers", str(workers), "--redis-url", f"redis://127.0.0.1:{redis_port}",
                   "--log-format", "json", "--max-connections-per-ip", str(clients + 100)])
    reader = asyncio.create_task(serve.read())
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
        publisher = asyncio.create_task(_publish(endpoint, stop, sent, 1 / rate))
        await asyncio.sleep(2)
        print(f"{clients} reliable clients on {workers} workers, {rate:g} REST sends/s to their group")
        print(f"{'worker':>8} {'drain s':>8} {'handed over':>12} {'recovered: p50 s':>17} {'p99 s':>7} {'max s':>7}")
        for pid in pids:
            before = {id(c): len(c.recovered_at) for c in population}
            signalled = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            new = int((await serve.wait_for(rf"worker {pid} is draining; started worker (\d+)")).group(1))
            await serve.wait_for(rf"worker {new} is serving")
            while not _gone(pid):
                await asyncio.sleep(0.05)
            drained = serve.events("drained")[-1]
            moved = [c.recovered_at[before[id(c)]] - signalled for c in population
                     if len(c.recovered_at) > before[id(c)]]
            figures = [percentile(sorted(moved), q) for q in (50, 99, 100)] if moved else [0.0] * 3
            print(f"{pid:>8} {drained['seconds']:>8.2f} {len(moved):>12} {figures[0]:>17.3f} {figures[1]:>7.3f} "
                  f"{figures[2]:>7.3f}")
        await asyncio.sleep(2)
        stop.set()
        await publisher
        deadline = time.monotonic() + RECOVERY_SECONDS
        while any(len(c.data) < len(sent) for c in population) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        expected = set(sent)
        lost = sum(len(expected - set(c.data)) for c in population)
        repeated = sum(len(c.data) - len(set(c.data)) for c in population)
        print(f"{len(sent)} messages sent; over all clients: {lost} lost, {repeated} received twice, "
              f"{sum(c.data != sorted(c.data) for c in population)} clients out of order")
        for task in tasks:
            task.cancel()
    finally:
        stop.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.proc.pid, signal.SIGTERM)
        serve.proc.wait(30)
        reader.cancel()
        redis.terminate()
        redis.wait(10)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=100.0, help="REST sends per second (default 100)")
    options = parser.parse_args()
    asyncio.run(main(options.clients, options.workers, options.rate))


if __name__ == "__main__":
    cli()
