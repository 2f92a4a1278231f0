"""The servers under test: how to start each, how it is triggered, and whether it can run here."""
from __future__ import annotations

import asyncio
import collections
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .procs import Children

__all__ = ["FASTPUSH", "PEERS", "ROOT", "RunningServer", "Target", "prepare", "start_server"]

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / "benches" / "peers"
READY_TIMEOUT = 30.0
NPM_TIMEOUT = 180
_READY = re.compile(r"Endpoint=(http://127\.0\.0\.1:(\d+))")


@dataclass(frozen=True)
class Target:
    """A server under test. `trigger` is "rest" (fastpush's REST API) or "pipe" (stdin lines)."""

    key: str
    label: str
    trigger: str
    command: Callable[[str], list[str]]  # access key -> argv


FASTPUSH = (
    Target("fastpush-rest", "fastpush (REST)", "rest",
           lambda key: [sys.executable, "-m", "fastpush", "serve", "--port", "0", f"--access-key={key}",
                        "--log-level", "WARNING"]),
    Target("fastpush-embed", "fastpush (embedded)", "pipe",
           lambda key: [sys.executable, "-m", "benches.embedded_server", f"--access-key={key}"]),
)
PEERS = (
    Target("websockets", "websockets broadcast()", "pipe",
           lambda key: [sys.executable, "-m", "benches.peers.websockets_broadcast"]),
    Target("node-ws", "Node ws (wss.clients)", "pipe",
           lambda key: ["node", str(PEERS_DIR / "ws_broadcast.js")]),
    Target("picows", "picows send loop", "pipe",
           lambda key: [sys.executable, "-m", "benches.peers.picows_broadcast"]),
)


def prepare(target: Target) -> str | None:
    """Make the target runnable (`npm ci` for Node ws once); the reason it cannot run, or None."""
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


class RunningServer:
    """A started server process: its endpoint, and its stdout drained so it never blocks on a full pipe."""

    def __init__(self, target: Target, proc: asyncio.subprocess.Process, endpoint: str):
        self.target = target
        self.proc = proc
        self.endpoint = endpoint
        self.port = int(endpoint.rsplit(":", 1)[1])
        self.output: collections.deque[str] = collections.deque(maxlen=20)
        self._drain = asyncio.get_running_loop().create_task(self._drain_stdout())

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdin(self) -> asyncio.StreamWriter:
        assert self.proc.stdin is not None
        return self.proc.stdin

    async def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.output.append(line.decode(errors="replace").rstrip())

    async def stop(self, children: Children) -> None:
        await children.stop(self.proc)
        self._drain.cancel()


async def start_server(children: Children, target: Target, access_key: str,
                       cpus: frozenset[int] | None) -> RunningServer:
    """Start the target and wait (bounded) for its `Endpoint=http://127.0.0.1:PORT` line."""
    proc = await children.spawn(target.key, target.command(access_key), cpus, ROOT)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            while line := (await proc.stdout.readline()).decode(errors="replace"):
                seen.append(line.rstrip())
                if match := _READY.search(line):
                    return RunningServer(target, proc, match.group(1))
        why = f"exited with code {await proc.wait()}"
    except TimeoutError:
        why = f"printed no endpoint within {READY_TIMEOUT} s"
    await children.stop(proc)
    raise RuntimeError(f"{target.label} {why}:\n" + "\n".join(seen[-10:] + [children.log_tail(target.key)]))
