"""One server under the ticker workload: capacity, latency at fractions of it, and slow readers.

The steps, each bounded in count and time:
1. start the server on the server core; RSS with no connection;
2. connect N subscribers from load-generator processes, each following its K symbols; RSS again;
3. warm-up: a second of ticks at a low rate (every subscriber learns its frames' shape);
4. capacity: `runs` bursts of ticks, `burst_deliveries` deliveries each, published at once; deliveries per
   second from the first publish to the last delivery; the median is the capacity;
5. steps: at each fraction of the capacity, ticks at the matching sustained rate (ticks/s = fraction x
   capacity / mean deliveries per tick) for `step_seconds` after a settling second; deliveries per
   second, publish-to-receive latency of every tick read (a sample every k deliveries, so that at most
   `max_samples` are kept), server CPU per delivery, RSS at the end;
6. slow readers: at `slow_load` of the capacity, `slow_share` of the subscribers read only `slow_read` of
   the bytes they are sent, for `slow_seconds`; the healthy subscribers' latency, the slow ones'
   staleness (the age of each tick when they read it), who was disconnected and with which close code.

With `capacity` given (the conflation row), only 1-3 and 6 run, at the tick rate that capacity gives.
"""
from __future__ import annotations

import asyncio
import json
import math
import secrets
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .loadgens import PORTS_PER_SOURCE_IP, LoadGen
from .procs import Children, CorePlan, core_seconds, cpu_seconds, rss_bytes
from .progress import Progress
from .servers import ROOT, RunningServer, start_server
from .stats import spread, summarize_ns
from .ticker_servers import TickerTarget, client_spec, publisher_spec
from .ticker_workload import Workload, followers, group_name, mean_fanout, tick_text
from .ws_publisher import WsPublisher

__all__ = ["TickerSettings", "measure_ticker", "slow_flags"]

IDLE_SETTLE = 1.0
WARMUP_SECONDS = 1.0
WARMUP_RATE = 200.0  # ticks per second
STEP_SETTLE = 1.0
PUBLISH_EVERY = 0.005  # seconds between the publisher's batches at a sustained rate
RUN_TIMEOUT = 60.0
RUN_GAP = 0.5
DRAIN_TIMEOUT = 10.0
DRAIN_POLL = 0.25
EVENT_TIMEOUT = 30.0
BUSY = 0.85
DISTURBED = 0.1
TICK_CHUNK = 10_000


@dataclass(frozen=True)
class TickerSettings:
    workload: Workload
    payload_bytes: int
    loads: tuple[float, ...]
    step_seconds: float
    burst_deliveries: int
    runs: int
    slow_share: float
    slow_read: float
    slow_load: float
    slow_seconds: float
    per_loadgen: int
    max_samples: int


def slow_flags(clients: int, share: float) -> list[bool]:
    """Which subscribers read slowly in the slow phase: `share` of them, spread evenly over the list."""
    return [math.floor((i + 1) * share) != math.floor(i * share) for i in range(clients)]


class _Meter:
    """CPU seconds of the server, the load generators and this process (the publisher), and of the
    server's core and the load side's cores: what other processes took is the difference."""

    def __init__(self, server_pids: list[int], gens: list[LoadGen], cores: CorePlan):
        self.server = server_pids
        self.gens = [g.pid for g in gens]
        self.cores = cores

    def read(self) -> tuple[float, ...]:
        server_core = core_seconds(self.cores.server) if self.cores.server else 0.0
        load_core = core_seconds(self.cores.load) if self.cores.load else 0.0
        return (sum(map(cpu_seconds, self.server)), sum(map(cpu_seconds, self.gens)), time.process_time(),
                server_core, load_core)

    def usage(self, before: tuple[float, ...], wall: float) -> dict:
        server, gens, publisher, server_core, load_core = (a - b for a, b in zip(self.read(), before, strict=True))
        usage = {"server_cpu_seconds": round(server, 3), "loadgen_cpu_seconds": round(gens, 3),
                 "server_core_busy": round(server / wall, 3),
                 "loadgen_cores_busy": round((gens + publisher) / wall / max(1, len(self.cores.load or ())), 3),
                 "other_processes": None}
        if self.cores.server and self.cores.load and wall >= 1.0:
            usage["other_processes"] = {
                "server_core": round(max(0.0, server_core - server) / wall / len(self.cores.server), 3),
                "load_cores": round(max(0.0, load_core - gens - publisher) / wall / len(self.cores.load), 3)}
        return usage


class _Ticks:
    """The endless tick stream: symbols drawn by tick share, a sequence number per symbol."""

    def __init__(self, workload: Workload, payload_bytes: int, seed: int):
        self.workload = workload
        self.size = payload_bytes
        self.seed = seed
        self.seq = [0] * workload.symbols
        self._symbols: Iterator[int] = iter(())

    def next_symbols(self, count: int) -> list[int]:
        out = []
        while len(out) < count:
            for symbol in self._symbols:
                out.append(symbol)
                if len(out) == count:
                    break
            else:
                self.seed += 1
                self._symbols = iter(self.workload.ticks(TICK_CHUNK, self.seed))
        return out

    def batch(self, symbols: Sequence[int]) -> list[tuple[str, str]]:
        """(group, text) per symbol, all stamped now."""
        now = time.monotonic_ns()
        out = []
        for symbol in symbols:
            self.seq[symbol] += 1
            out.append((group_name(symbol), tick_text(symbol, self.seq[symbol], self.size, now)))
        return out


class _Run:
    """One server being measured: its processes, its subscribers' load generators, its publisher."""

    def __init__(self, target: TickerTarget, server: RunningServer, gens: list[LoadGen],
                 gen_followers: list[list[int]], publisher: WsPublisher, meter: _Meter, scratch: Path):
        self.target = target
        self.server = server
        self.gens = gens
        self.gen_followers = gen_followers
        self.publisher = publisher
        self.meter = meter
        self.scratch = scratch

    def measured_pids(self) -> list[int]:
        return self.server.workers if self.target.measured_children else self.server.pids

    def rss(self) -> int:
        return sum(map(rss_bytes, self.measured_pids()))

    async def command(self, cmd: str, **params: object) -> None:
        await asyncio.gather(*(g.command(cmd, **params) for g in self.gens))

    async def sustain(self, ticks: _Ticks, rate: float, seconds: float) -> int:
        """Publish at `rate` ticks per second for `seconds`, in batches every PUBLISH_EVERY; ticks sent."""
        started = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(rate * elapsed) + 1 - sent
            if due > 0:
                await self.publisher.send(self.publisher.frames(ticks.batch(ticks.next_symbols(due))))
                sent += due
            await asyncio.sleep(PUBLISH_EVERY)
        return sent

    async def report(self) -> dict:
        """Every load generator's deliveries since `record`, summed, with their samples merged."""
        found: dict = {"healthy": 0, "slow": 0, "samples": {"healthy": array("q"), "slow": array("q")}}
        for gen in self.gens:
            prefix = self.scratch / f"{gen.name}.samples"
            gen.send("report", prefix=str(prefix))
            got = await gen.expect("report", EVENT_TIMEOUT)
            for kind in ("healthy", "slow"):
                found[kind] += got[kind]["delivered"]
                path = Path(f"{prefix}.{kind}")
                with open(path, "rb") as f:
                    found["samples"][kind].fromfile(f, got[kind]["samples"])
                path.unlink()
        return found

    async def losses(self) -> dict:
        """Subscribers lost since `record` per class and close code, and those still connected, summed."""
        for gen in self.gens:
            gen.send("lost")
        found: dict = {"lost": {"healthy": 0, "slow": 0}, "codes": {}, "ready": {"healthy": 0, "slow": 0}}
        for got in await asyncio.gather(*(g.expect("lost", EVENT_TIMEOUT) for g in self.gens)):
            for kind in ("healthy", "slow"):
                found["lost"][kind] += got["lost"][kind]
                found["ready"][kind] += got["ready"][kind]
            for code, count in got["codes"].items():
                found["codes"][code] = found["codes"].get(code, 0) + count
        return found

    async def drain(self) -> None:
        """Wait until deliveries stop growing (bounded): the next phase must not start with a backlog."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        last = -1
        while time.monotonic() < deadline:
            for gen in self.gens:
                gen.send("tally")
            now = sum(e["delivered"] for e in await asyncio.gather(*(g.expect("tally", EVENT_TIMEOUT)
                                                                      for g in self.gens)))
            if now == last:
                return
            last = now
            await asyncio.sleep(DRAIN_POLL)


def _every(expected: float, max_samples: int) -> int:
    return max(1, math.ceil(expected / max_samples))


def _per(cpu_seconds_spent: float, deliveries: int) -> float | None:
    return round(cpu_seconds_spent * 1e6 / deliveries, 3) if deliveries else None


def _latency(samples: array) -> dict:
    summary = summarize_ns(samples)
    summary.pop("curve", None)
    return summary


async def _capacity(run: _Run, settings: TickerSettings, mean: float, ticks: _Ticks, progress: Progress,
                    at: float) -> dict:
    count = max(1, math.ceil(settings.burst_deliveries / mean))
    runs = []
    cpu = loadgen_cpu = wall = 0.0
    for number in range(settings.runs):
        progress.detail(at + 0.2 * number / settings.runs, f"burst {number + 1}/{settings.runs}")
        symbols = ticks.next_symbols(count)
        frames = run.publisher.frames(ticks.batch(symbols))
        expected = [sum(per_symbol[s] for s in symbols) for per_symbol in run.gen_followers]
        await asyncio.gather(*(g.command("count", deliveries=n) for g, n in zip(run.gens, expected, strict=True)))
        before = run.meter.read()
        start_ns = time.monotonic_ns()
        await run.publisher.send(frames)
        try:
            done = await asyncio.gather(*(g.expect("complete", RUN_TIMEOUT) for g in run.gens))
            end_ns, delivered, complete = max(e["t_ns"] for e in done), sum(e["delivered"] for e in done), True
        except TimeoutError:
            for gen in run.gens:
                gen.send("tally")
            tallies = await asyncio.gather(*(g.expect("tally", EVENT_TIMEOUT) for g in run.gens))
            end_ns, delivered, complete = time.monotonic_ns(), sum(e["delivered"] for e in tallies), False
        seconds = (end_ns - start_ns) / 1e9
        usage = run.meter.usage(before, seconds)
        runs.append({"ticks": count, "expected": sum(expected), "deliveries": delivered, "complete": complete,
                     "seconds": round(seconds, 4), "per_second": round(delivered / seconds), **usage})
        cpu += usage["server_cpu_seconds"]
        loadgen_cpu += usage["loadgen_cpu_seconds"]
        wall += seconds
        await run.drain()
        await asyncio.sleep(RUN_GAP)
    deliveries = sum(r["deliveries"] for r in runs)
    return {"runs": runs, "deliveries_per_second": spread([r["per_second"] for r in runs]),
            "server_cpu_us_per_delivery": _per(cpu, deliveries),
            "loadgen_cpu_us_per_delivery": _per(loadgen_cpu, deliveries),
            "server_core_busy": round(cpu / wall, 3) if wall else None,
            "loadgen_cores_busy": max(r["loadgen_cores_busy"] for r in runs)}


async def _step(run: _Run, settings: TickerSettings, ticks: _Ticks, rate: float, seconds: float, mean: float,
                slow: bool) -> dict:
    """Ticks at `rate` for a settling second (or none with slow readers: they start behind from the
    first tick), then `seconds` recorded; what was delivered, how late, and what it cost."""
    settle = 0.0 if slow else STEP_SETTLE
    publishing = asyncio.get_running_loop().create_task(run.sustain(ticks, rate, settle + seconds))
    try:
        await asyncio.sleep(settle)
        every = _every(rate * mean * seconds, settings.max_samples)
        await run.command("record", every=every, slow_every=every)
        before = run.meter.read()
        started = time.monotonic()
        await asyncio.sleep(seconds)
        got = await run.report()
        wall = time.monotonic() - started
        usage = run.meter.usage(before, wall)
        sent = await publishing
    finally:
        publishing.cancel()
    rss = run.rss()
    if slow:  # a slow reader notices its server closed it only once it has read what came before the close
        await run.command("slow", tick_rate=0, fraction=0)
        await run.drain()
    got.update(await run.losses())
    delivered = got["healthy"] + got["slow"]
    step = {"tick_rate": round(rate, 1), "ticks_sent_per_second": round(sent / (settle + seconds), 1),
            "offered_per_second": round(rate * mean), "delivered_per_second": round(delivered / wall),
            "server_cpu_us_per_delivery": _per(usage["server_cpu_seconds"], delivered),
            "loadgen_cpu_us_per_delivery": _per(usage["loadgen_cpu_seconds"], delivered),
            "rss_bytes": rss, "lost": got["lost"], "close_codes": got["codes"], **usage}
    if slow:
        step["latency"] = _latency(got["samples"]["healthy"])
        step["staleness"] = _latency(got["samples"]["slow"])
        step["slow_delivered_per_second"] = round(got["slow"] / wall)
        step["slow_clients"] = got["ready"]["slow"] + got["lost"]["slow"]
    else:
        step["latency"] = _latency(got["samples"]["healthy"] + got["samples"]["slow"])
    return step


async def _connect(target: TickerTarget, server: RunningServer, key: str, settings: TickerSettings,
                   subscriptions: list[tuple[int, ...]], slow: list[bool], cores: CorePlan, children: Children,
                   scratch: Path) -> tuple[list[LoadGen], list[list[int]], dict]:
    """Start the load generators, each with its slice of the subscribers; (handles, followers of each
    symbol per load generator, connection totals)."""
    n = len(subscriptions)
    shares = settings.workload.tick_shares()
    processes = max(1, math.ceil(n / settings.per_loadgen))
    bounds = [n * i // processes for i in range(processes + 1)]
    deadline = _loadgen_deadline(settings, n)
    gens, gen_followers = [], []
    for i in range(processes):
        path = scratch / f"{target.key}-clients-{i}.jsonl"
        chosen = subscriptions[bounds[i]:bounds[i + 1]]
        with open(path, "w") as out:
            for offset, symbols in enumerate(chosen):
                spec = client_spec(target, server.endpoint, key, symbols)
                out.write(json.dumps({"path": spec.path, "protocol": spec.protocol, "hello": spec.hello,
                                      "slow": slow[bounds[i] + offset],
                                      "share": sum(shares[s] for s in symbols)}) + "\n")
        argv = [sys.executable, "-m", "benches.ticker_loadgen", "--port", str(server.port), "--dialect", target.dialect,
                "--clients", str(path), "--deadline", str(deadline)]
        if n > PORTS_PER_SOURCE_IP:
            argv += ["--source-ip", f"127.0.0.{i + 1}"]
        name = f"ticker-loadgen-{i}"
        gens.append(LoadGen(name, await children.spawn(name, argv, cores.load, ROOT), children))
        gen_followers.append(followers(chosen, settings.workload.symbols))
    reports = await asyncio.gather(*(g.expect("connected", 30 + n / 300) for g in gens))
    totals = {"ready": sum(r["ready"] for r in reports), "failed": sum(r["failed"] for r in reports),
              "error": next((r["error"] for r in reports if r["error"]), None), "processes": len(gens)}
    return gens, gen_followers, totals


def _loadgen_deadline(settings: TickerSettings, n: int) -> float:
    """Long enough for every phase at its bounds; the load generators exit by themselves after it."""
    steps = len(settings.loads) * (STEP_SETTLE + settings.step_seconds + DRAIN_TIMEOUT + EVENT_TIMEOUT)
    capacity = settings.runs * (RUN_TIMEOUT + DRAIN_TIMEOUT + EVENT_TIMEOUT)
    return 120 + n / 100 + capacity + steps + settings.slow_seconds + EVENT_TIMEOUT


async def measure_ticker(target: TickerTarget, settings: TickerSettings, subscriptions: list[tuple[int, ...]],
                         cores: CorePlan, children: Children, progress: Progress, at: float, scratch: Path,
                         capacity: float | None = None) -> dict:
    """Measure one server; `at` is where it starts on the progress bar (one unit wide). With `capacity`
    given, only the slow-reader phase runs, at the tick rate that capacity gives."""
    workload = settings.workload
    mean = mean_fanout(workload.tick_shares(), followers(subscriptions, workload.symbols))
    key = secrets.token_urlsafe(32)
    progress.phase(at, f"{target.label}: starting the server")
    server = await start_server(children, target.server, key, cores.server_cpus)
    gens: list[LoadGen] = []
    publisher: WsPublisher | None = None
    row: dict = {"target": target.key, "label": target.label, "dialect": target.dialect,
                 "connections": len(subscriptions), "mean_deliveries_per_tick": round(mean, 1)}
    try:
        await asyncio.sleep(IDLE_SETTLE)
        rss_empty = sum(map(rss_bytes, server.workers if target.measured_children else server.pids))
        progress.phase(at + 0.05, f"{target.label}: connecting {len(subscriptions)} subscribers")
        slow = slow_flags(len(subscriptions), settings.slow_share)
        gens, gen_followers, connected = await _connect(target, server, key, settings, subscriptions, slow, cores,
                                                        children, scratch)
        row.update(connected=connected["ready"], connect_failures=connected["failed"],
                   connect_error=connected["error"], loadgen_processes=connected["processes"])
        if not connected["ready"]:
            raise RuntimeError(f"no subscriber could connect to {target.label}: {connected['error']}\n"
                               + children.log_tail(target.key))
        spec = publisher_spec(target, server.endpoint, key)
        publisher = await WsPublisher.open("127.0.0.1", server.port, spec.path, spec.protocol, target.dialect,
                                           spec.hello)
        run = _Run(target, server, gens, gen_followers, publisher, _Meter(server.pids, gens, cores), scratch)
        await asyncio.sleep(IDLE_SETTLE)
        rss_idle = run.rss()
        row.update(rss_empty_bytes=rss_empty, rss_idle_bytes=rss_idle,
                   rss_per_connection_bytes=round((rss_idle - rss_empty) / connected["ready"]))
        ticks = _Ticks(workload, settings.payload_bytes, seed=1000)
        await run.sustain(ticks, WARMUP_RATE, WARMUP_SECONDS)
        await run.drain()
        if capacity is None:
            progress.phase(at + 0.15, f"{target.label}: capacity")
            row["capacity"] = await _capacity(run, settings, mean, ticks, progress, at + 0.15)
            capacity = row["capacity"]["deliveries_per_second"]["median"]
            row["steps"] = []
            for number, load in enumerate(settings.loads):
                progress.phase(at + 0.35 + 0.45 * number / len(settings.loads),
                               f"{target.label}: {load:.0%} of capacity")
                step = await _step(run, settings, ticks, load * capacity / mean, settings.step_seconds, mean, False)
                row["steps"].append({"load": load, **step})
                await run.drain()
        progress.phase(at + 0.8, f"{target.label}: {settings.slow_share:.0%} slow readers")
        rate = settings.slow_load * capacity / mean
        await run.command("slow", tick_rate=rate, fraction=settings.slow_read)
        row["slow"] = {"load": settings.slow_load, "read_fraction": settings.slow_read,
                       **await _step(run, settings, ticks, rate, settings.slow_seconds, mean, True)}
        row["publish_failures"] = publisher.failures
    finally:
        if publisher is not None:
            publisher.close()
        for gen in gens:
            await gen.stop()
        await server.stop(children)
    row["notes"] = notes(row)
    return row


def notes(row: dict) -> list[str]:
    """What makes a row's figures less than they seem."""
    found = []
    if row.get("connect_failures"):
        found.append(f"{row['connect_failures']} of {row['connections']} subscribers failed to connect "
                     f"({row['connect_error']})")
    capacity = row.get("capacity")
    if capacity:
        if not all(r["complete"] for r in capacity["runs"]):
            found.append(f"capacity: a burst was not fully delivered within {RUN_TIMEOUT} s")
        server, load = capacity["server_core_busy"] or 0, capacity["loadgen_cores_busy"]
        if load > BUSY:
            found.append(f"capacity: load-generator core(s) {load:.0%} busy, server core {server:.0%}: the load "
                         f"generator was {'nearly the bottleneck too' if server > BUSY else 'the bottleneck'}, "
                         f"so the capacity is a lower bound")
    phases = [(f"capacity run {i + 1}", r) for i, r in enumerate(capacity["runs"])] if capacity else []
    phases += [(f"{s['load']:.0%} step", s) for s in row.get("steps", [])]
    if "slow" in row:
        phases.append(("slow readers", row["slow"]))
    for name, phase in phases:
        others = phase.get("other_processes") or {}
        if max(others.values(), default=0) > DISTURBED:
            found.append(f"{name}: other processes took {others['server_core']:.0%} of the server core and "
                         f"{others['load_cores']:.0%} of the load-generator core(s): figures are disturbed")
        if phase.get("lost") and phase["lost"]["healthy"]:
            found.append(f"{name}: {phase['lost']['healthy']} healthy subscribers were disconnected "
                         f"(close codes {phase['close_codes']})")
    if row.get("publish_failures"):
        found.append(f"publish failures: {row['publish_failures'][0]}")
    return found
