"""The servers under test: how to start each, how it is triggered, and whether it can run here.

A server may be several processes (`fastpush serve --workers N`: a parent and its workers) and may
come with its own redis-server; RunningServer knows them all, so CPU and memory add up the whole
deployment.
"""
from __future__ import annotations

import asyncio
import collections
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import centrifugo
from .embedded_server import BENCH_CONNECTIONS_PER_IP
from .procs import Children, descendants
from .redis_server import RedisServer, missing

__all__ = ["FASTPUSH_EMBED", "FASTPUSH_REST", "PEERS", "PEER_KEYS", "ROOT", "RunningServer", "Target", "prepare",
           "redis_targets", "start_server"]

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / "benches" / "peers"
READY_TIMEOUT = 30.0
NPM_TIMEOUT = 180
CC_TIMEOUT = 120
C_SOURCE = PEERS_DIR / "c_broadcast.c"
C_BINARY = PEERS_DIR / "build" / "c_broadcast"
C_BATCH = 64
_READY = re.compile(r"Endpoint=(http://127\.0\.0\.1:(\d+))")


@dataclass(frozen=True)
class Target:
    """A server under test. `trigger` is "rest" (fastpush's REST API), "pipe" (stdin lines) or
    "centrifugo" (a Centrifugo client's publish commands); `redis`: it gets a redis-server of its own;
    `workers` > 1: it is that many processes sharing the port."""

    key: str
    label: str
    trigger: str
    command: Callable[[str, str | None], list[str]]  # access key, Redis URL -> argv
    redis: bool = False
    workers: int = 1
    dialect: str = "webpubsub"  # how subscribers talk to it: benches/loadgen.py --dialect


def _fastpush_serve(workers: int) -> Callable[[str, str | None], list[str]]:
    def argv(key: str, redis_url: str | None) -> list[str]:
        command = [sys.executable, "-m", "fastpush", "serve", "--port", "0", f"--access-key={key}",
                   "--log-level", "WARNING", f"--max-connections-per-ip={BENCH_CONNECTIONS_PER_IP}"]
        if redis_url:
            command += ["--redis-url", redis_url]
        if workers > 1:
            command += ["--workers", str(workers)]
        return command
    return argv


FASTPUSH_REST = Target("fastpush-rest", "fastpush (REST)", "rest", _fastpush_serve(1))
FASTPUSH_EMBED = Target("fastpush-embed", "fastpush (embedded)", "pipe",
                        lambda key, _: [sys.executable, "-m", "benches.embedded_server", f"--access-key={key}"])
PEERS = (
    Target("websockets", "websockets broadcast()", "pipe",
           lambda key, _: [sys.executable, "-m", "benches.peers.websockets_broadcast"]),
    Target("node-ws", "Node ws (wss.clients)", "pipe",
           lambda key, _: ["node", str(PEERS_DIR / "ws_broadcast.js")]),
    Target("picows", "picows send loop", "pipe",
           lambda key, _: [sys.executable, "-m", "benches.peers.picows_broadcast"]),
    Target("centrifugo", f"Centrifugo v{centrifugo.VERSION}", "centrifugo",
           lambda key, _: [sys.executable, "-m", "benches.peers.centrifugo_peer",
                           "--binary", centrifugo.binary() or "centrifugo"], dialect="centrifugo"),
    Target("c-send", "C epoll, send() each", "pipe", lambda key, _: [str(C_BINARY), "--batch", "1"]),
    Target("c-batch", f"C epoll, writev {C_BATCH}", "pipe", lambda key, _: [str(C_BINARY), "--batch", str(C_BATCH)]),
)
PEER_KEYS = tuple(t.key for t in PEERS)


def redis_targets(workers: int) -> list[Target]:
    """fastpush behind a Redis broker, published to through REST: one node (what Redis costs by
    itself), and with workers > 1 that many processes on one port (what scaling out on one machine
    gains)."""
    targets = [Target("fastpush-redis", "fastpush (1 node, Redis)", "rest", _fastpush_serve(1), redis=True)]
    if workers > 1:
        targets.append(Target("fastpush-workers", f"fastpush ({workers} workers, Redis)", "rest",
                              _fastpush_serve(workers), redis=True, workers=workers))
    return targets


def prepare(target: Target) -> str | None:
    """Make the target runnable (`npm ci` for Node ws once, Centrifugo built once when Go is here); the
    reason it cannot run, or None."""
    if target.redis:
        return missing()
    if target.key == "centrifugo":
        return centrifugo.find_or_build(build=True)[1]
    if target.key in ("c-send", "c-batch"):
        return build_c_peer()
    if target.key == "websockets" and importlib.util.find_spec("websockets") is None:
        return "the websockets package is not installed (pip install websockets)"
    if target.key != "node-ws":
        return None
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not on PATH"
    if not (PEERS_DIR / "node_modules" / "ws").is_dir():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=PEERS_DIR, check=False,
                              capture_output=True, text=True, timeout=NPM_TIMEOUT)
        if done.returncode != 0:
            return f"npm ci in {PEERS_DIR} failed: {done.stderr.strip()[-300:]}"
    return None


def build_c_peer() -> str | None:
    """Compile benches/peers/c_broadcast.c with the machine's `cc` (again when the source is newer); the
    reason it cannot run, or None."""
    if C_BINARY.exists() and C_BINARY.stat().st_mtime >= C_SOURCE.stat().st_mtime:
        return None
    compiler = shutil.which("cc")
    if compiler is None:
        return "no C compiler (`cc`) on PATH: apt-get install gcc"
    C_BINARY.parent.mkdir(exist_ok=True)
    building = C_BINARY.with_name(f"{C_BINARY.name}.{os.getpid()}")  # renamed when complete: runs may race
    done = subprocess.run([compiler, "-O2", "-o", str(building), str(C_SOURCE)], check=False, capture_output=True,
                          text=True, timeout=CC_TIMEOUT)
    if done.returncode != 0:
        return f"cc {C_SOURCE.name} failed: {done.stderr.strip()[-300:]}"
    os.replace(building, C_BINARY)
    return None


class RunningServer:
    """A started server: its endpoint, its processes (the one started, and its workers if any), its
    redis-server if it has one, and its stdout drained so it never blocks on a full pipe."""

    def __init__(self, target: Target, proc: asyncio.subprocess.Process, endpoint: str,
                 redis: RedisServer | None):
        self.target = target
        self.proc = proc
        self.endpoint = endpoint
        self.port = int(endpoint.rsplit(":", 1)[1])
        self.redis = redis
        self.workers = descendants(proc.pid)  # all started once the endpoint is printed
        self.output: collections.deque[str] = collections.deque(maxlen=20)
        self._drain = asyncio.get_running_loop().create_task(self._drain_stdout())

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        """The server's own processes (not its redis-server)."""
        return [self.proc.pid, *self.workers]

    @property
    def stdin(self) -> asyncio.StreamWriter:
        assert self.proc.stdin is not None
        return self.proc.stdin

    async def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.output.append(line.decode(errors="replace").rstrip())

    async def stop(self, children: Children) -> None:
        """The server first, then its redis-server: the server must not see its broker go away."""
        await children.stop(self.proc)
        self._drain.cancel()
        if self.redis is not None:
            await self.redis.stop(children)


async def start_server(children: Children, target: Target, access_key: str,
                       cpus: frozenset[int]) -> RunningServer:
    """Start the target (after its redis-server, on the same CPUs) and wait (bounded) for its
    `Endpoint=http://127.0.0.1:PORT` line, which a --workers parent prints once every worker is ready."""
    redis = await RedisServer.start(children, cpus) if target.redis else None
    try:
        return await _start(children, target, access_key, cpus, redis)
    except BaseException:
        if redis is not None:
            await redis.stop(children)
        raise


async def _start(children: Children, target: Target, access_key: str, cpus: frozenset[int],
                 redis: RedisServer | None) -> RunningServer:
    # A --workers parent stops its workers on SIGTERM; SIGKILL would leave them running.
    death_signal = signal.SIGTERM if target.workers > 1 else signal.SIGKILL
    argv = target.command(access_key, redis.url if redis else None)
    proc = await children.spawn(target.key, argv, cpus, ROOT, death_signal)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            while line := (await proc.stdout.readline()).decode(errors="replace"):
                seen.append(line.rstrip())
                if match := _READY.search(line):
                    return RunningServer(target, proc, match.group(1), redis)
        why = f"exited with code {await proc.wait()}"
    except TimeoutError:
        why = f"printed no endpoint within {READY_TIMEOUT} s"
    await children.stop(proc)
    raise RuntimeError(f"{target.label} {why}:\n" + "\n".join([*seen[-10:], children.log_tail(target.key)]))
