"""The orchestrator's side of the load-generator processes: start them, command them, await their events."""
from __future__ import annotations

import asyncio
import json
import math
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .procs import Children
from .servers import ROOT

__all__ = ["LoadGen", "LoadPlan", "collect", "start_loadgens"]

PORTS_PER_SOURCE_IP = 25_000  # of the ~28,000 ephemeral ports Linux uses by default per address pair
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True)
class LoadPlan:
    connections: int
    json_fraction: float
    per_process: int  # a process may hold only so many open files
    deadline: float  # seconds after which every load generator exits by itself

    def split(self) -> list[tuple[int, int]]:
        """(raw, json) subscribers for each process, as even as possible."""
        processes = max(1, math.ceil(self.connections / self.per_process))
        json_total = round(self.connections * self.json_fraction)
        raw_total = self.connections - json_total
        return [(_share(raw_total, processes, i), _share(json_total, processes, i)) for i in range(processes)]


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (index < total % parts)


class LoadGen:
    """One load-generator process: commands go down its stdin, events come up its stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, children: Children):
        self.name = name
        self.proc = proc
        self.children = children
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read_events())

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read_events(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.events.put_nowait(json.loads(line))
        self.events.put_nowait({"event": "exited"})

    async def expect(self, event: str, timeout: float, match: Callable[[dict], bool] = lambda e: True) -> dict:
        """The next `event` that matches; earlier events (e.g. late deliveries) are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                got = await self.events.get()
                if got["event"] == "exited":
                    self.events.put_nowait(got)
                    raise RuntimeError(f"load generator {self.name} exited:\n{self.children.log_tail(self.name)}")
                if got["event"] == event and match(got):
                    return got

    async def command(self, cmd: str, **params: object) -> None:
        """Send a command and wait for its `ok`."""
        self.send(cmd, **params)
        await self.expect("ok", COMMAND_TIMEOUT, lambda e: e["cmd"] == cmd)

    def send(self, cmd: str, **params: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **params}).encode() + b"\n")

    async def stop(self) -> None:
        await self.children.stop(self.proc)
        self._reader.cancel()


async def start_loadgens(children: Children, plan: LoadPlan, port: int, path: str,
                         cpus: frozenset[int] | None, connect_timeout: float,
                         dialect: str = "webpubsub") -> tuple[list[LoadGen], dict]:
    """Start the processes, wait until every subscriber is connected or failed; (handles, totals), the
    totals with the ramp's `seconds` (from the first process's first connect to the last one's last
    handshake). `dialect`: how a subscriber talks to the server (benches/loadgen.py --dialect)."""
    split = plan.split()
    many_ips = plan.connections > PORTS_PER_SOURCE_IP
    gens = []
    for i, (raw, wrapped) in enumerate(split):
        argv = [sys.executable, "-m", "benches.loadgen", "--port", str(port), "--path", path,
                "--raw", str(raw), "--json", str(wrapped), "--deadline", str(plan.deadline),
                "--dialect", dialect]
        if many_ips:
            argv += ["--source-ip", f"127.0.0.{i + 1}"]
        name = f"loadgen-{i}"
        gens.append(LoadGen(name, await children.spawn(name, argv, cpus, ROOT), children))
    reports = await asyncio.gather(*(g.expect("connected", connect_timeout) for g in gens))
    seconds = (max(r["t_ns"] for r in reports) - min(r["began_ns"] for r in reports)) / 1e9
    totals = {"ready": sum(r["ready"] for r in reports), "failed": sum(r["failed"] for r in reports),
              "error": next((r["error"] for r in reports if r["error"]), None), "processes": len(gens),
              "seconds": round(seconds, 3)}
    return gens, totals


async def collect(gens: list[LoadGen], scratch: Path, what: str, timeout: float) -> array:
    """The nanosecond figures `what` ("samples": latencies, "handshakes": handshake times) of every load
    generator, through files: they can be millions."""
    merged = array("q")
    for gen in gens:
        path = scratch / f"{gen.name}.{what}"
        gen.send(what, path=str(path))
        got = await gen.expect(what, timeout)
        with open(path, "rb") as f:
            merged.fromfile(f, got["count"])
        path.unlink()
    return merged
