"""One server under test at one connection count: idle memory, isolated-broadcast latency, saturation.

The steps, each bounded in count and time:
1. start the server on the server core (a server with several workers on all CPUs instead: that is
   what workers are for); RSS with no connection;
2. connect the subscribers from the load-generator processes; RSS again -> RSS per connection;
3. latency: warm-up, then isolated broadcasts (the next is published once every subscriber has the
   previous one, no sooner than 1/rate after it, and at least MIN_GAP later); every subscriber records
   receive - send;
4. saturation: `runs` bursts of `burst_deliveries / N` messages published at once; deliveries per second
   from the first publish to the last byte received, with the CPU both sides spent;
5. with `storm` (benches.scale), what it measures with the subscribers still connected.

The ramp of step 2 is reported too: how long the load generators took to connect everyone, and each
handshake's time.

A server's CPU and RSS are those of all its processes (a --workers parent and its workers) plus its
redis-server, if it has one: what the deployment costs, with Redis's share given separately.
"""
from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

from . import payload
from .centrifugo import PATH_SUFFIX as CENTRIFUGO_PATH
from .centrifugo_subscriber import BROADCAST_CHANNEL
from .loadgens import LoadGen, LoadPlan, collect, start_loadgens
from .procs import (
    Children,
    CorePlan,
    core_seconds,
    cpu_seconds,
    established_by_process,
    rss_bytes,
)
from .progress import Progress
from .publishers import CentrifugoPublisher, PipePublisher, Publisher, RestPublisher
from .scraper import MetricsScraper
from .servers import RunningServer, Target, start_server
from .stats import spread, summarize_ns
from .tokens import client_path

__all__ = ["Settings", "measure"]

WARMUP = 3
MIN_GAP = 0.01
IDLE_SETTLE = 1.0
RUN_GAP = 0.3
BROADCAST_TIMEOUT = 15.0
RUN_TIMEOUT = 60.0
EVENT_TIMEOUT = 30.0
LOADGEN_DEADLINE = 1800.0  # a load generator exits by itself after this (100,000 subscribers take minutes)
BUSY = 0.85  # above this a core counts as saturated
DISTURBED = 0.1  # other processes taking more of a core than this make a row's figures unreliable
JUDGED_SECONDS = 1.0  # shorter windows are too coarse for core shares
# In a latency phase longer than fastpush's 20 s keep-alive, the subscribers pong every KEEPALIVE_EVERY
# seconds, between two broadcasts, and the next waits until the server has read the pongs (its CPU
# below QUIET_SHARE of a core over QUIET_WINDOW, at most QUIET_LIMIT).
KEEPALIVE_EVERY = 10.0
QUIET_SHARE = 0.1
QUIET_WINDOW = 0.1
QUIET_LIMIT = 5.0


@dataclass(frozen=True)
class Settings:
    payload_bytes: int
    rate: float  # isolated broadcasts per second, at most
    messages: int  # timed isolated broadcasts, at most
    duration: float  # seconds the latency phase may take, at most
    burst_deliveries: int  # deliveries per saturation run
    runs: int
    json_fraction: float
    per_loadgen: int
    hub: str = "bench"
    scrape_interval: float | None = None  # GET /metrics this often while a fastpush server is measured
    pong_pauses: bool = True  # the subscribers pong every KEEPALIVE_EVERY s in a long latency phase


@dataclass(frozen=True)
class _Cpu:
    """CPU seconds of the server (`redis` of it its redis-server), the load generators and this process
    (the publisher), and of everything that ran on the server's core, the load side's cores and all
    CPUs: the difference is other processes disturbing us."""

    server: float = 0.0
    redis: float = 0.0
    loadgens: float = 0.0
    publisher: float = 0.0
    server_core: float = 0.0
    load_core: float = 0.0
    all_cpus: float = 0.0

    def __sub__(self, other: _Cpu) -> _Cpu:
        return _Cpu(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __add__(self, other: _Cpu) -> _Cpu:
        return _Cpu(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def others(self, wall: float, cores: CorePlan) -> dict:
        """Share of the server core, of the load cores and of all CPUs that other processes took (None
        where that cannot be told: nothing pinned, a server not pinned, or a window too short for
        /proc's 10 ms ticks)."""
        if cores.load is None or wall < JUDGED_SECONDS:
            return {"server_core": None, "load_cores": None, "all_cpus": None}
        ours = self.server + self.loadgens + self.publisher
        shares = {"server_core": None, "load_cores": None, "all_cpus": _share(self.all_cpus - ours, wall, cores.cpus)}
        if cores.server is not None:
            shares["server_core"] = _share(self.server_core - self.server, wall, cores.server)
            shares["load_cores"] = _share(self.load_core - self.loadgens - self.publisher, wall, cores.load)
        return shares


def _share(seconds: float, wall: float, cpus: frozenset[int]) -> float:
    return round(max(0.0, seconds) / wall / len(cpus), 3)


class _Meter:
    def __init__(self, server: RunningServer, gens: list[LoadGen], cores: CorePlan):
        self.server = server.pids
        self.redis = server.redis.pid if server.redis else None
        self.gens = [g.pid for g in gens]
        self.cores = cores

    def read(self) -> _Cpu:
        redis = cpu_seconds(self.redis) if self.redis else 0.0
        return _Cpu(server=sum(map(cpu_seconds, self.server)) + redis, redis=redis,
                    loadgens=sum(map(cpu_seconds, self.gens)), publisher=time.process_time(),
                    server_core=_pinned_seconds(self.cores.server), load_core=_pinned_seconds(self.cores.load),
                    all_cpus=core_seconds(self.cores.cpus))


def _pinned_seconds(cpus: frozenset[int] | None) -> float:
    return core_seconds(cpus) if cpus else 0.0


Storm = Callable[[RunningServer, list[LoadGen], Path], Awaitable[dict]]


async def measure(target: Target, connections: int, settings: Settings, cores: CorePlan, children: Children,
                  progress: Progress, at: float, scratch: Path, storm: Storm | None = None) -> dict:
    """Measure one server at one N; `at` is where this cell starts on the progress bar (one unit wide);
    `storm` runs last, before the server stops, and its figures are the row's `storm`."""
    key = secrets.token_urlsafe(32)
    name = f"{target.label} N={connections}"
    if target.workers > 1:
        cores = cores.unpinned_server()
    progress.phase(at, f"{name}: starting the server")
    server = await start_server(children, target, key, cores.server_cpus)
    gens: list[LoadGen] = []
    publisher: Publisher | None = None
    scraper = None
    if settings.scrape_interval and target.key.startswith("fastpush"):
        scraper = MetricsScraper(server.endpoint, key, settings.scrape_interval)
        scraper.start()
    scraped = stormed = None
    try:
        await asyncio.sleep(IDLE_SETTLE)
        rss_empty = _rss(server)
        progress.phase(at + 0.05, f"{name}: connecting")
        plan = LoadPlan(connections, settings.json_fraction, settings.per_loadgen, LOADGEN_DEADLINE)
        cpu_before_ramp = _server_cpu(server)
        path = client_path(server.endpoint, settings.hub, key) if target.dialect == "webpubsub" else CENTRIFUGO_PATH
        gens, connected = await start_loadgens(children, plan, server.port, path, cores.load,
                                               connect_timeout=30 + connections / 100, dialect=target.dialect)
        ready = connected["ready"]
        if not ready:
            raise RuntimeError(f"no subscriber could connect to {target.label}: {connected['error']}\n"
                               + children.log_tail(target.key))
        ramp = _ramp(connected, _server_cpu(server) - cpu_before_ramp,
                     await collect(gens, scratch, "handshakes", EVENT_TIMEOUT))
        await asyncio.sleep(IDLE_SETTLE)
        rss_idle = _rss(server)
        spread_over = established_by_process(server.workers, server.port) if target.workers > 1 else None
        publisher = await _publisher(target, server, settings.hub, key)
        meter = _Meter(server, gens, cores)
        progress.phase(at + 0.2, f"{name}: latency")
        latency = await _latency(gens, publisher, meter, settings, cores, progress, at + 0.2, scratch)
        progress.phase(at + 0.6, f"{name}: saturation")
        saturation = await _saturation(gens, publisher, meter, settings, cores, ready, progress, at + 0.6)
        await publisher.settle()
        publish_failures = publisher.failures
        if scraper is not None:
            scraped = await scraper.stop()
        if storm is not None:
            progress.phase(at + 0.9, f"{name}: reconnect storm")
            stormed = await storm(server, gens, scratch)
    finally:
        if scraper is not None and scraped is None:
            await scraper.stop()
        if publisher is not None:
            await publisher.close()
        for gen in gens:
            await gen.stop()
        await server.stop(children)
    row = {"target": target.key, "label": target.label, "trigger": target.trigger, "redis": target.redis,
           "workers": target.workers, "server_pinned": cores.server is not None, "connections": connections,
           "connected": ready, "connect_failures": connected["failed"], "connect_error": connected["error"],
           "loadgen_processes": connected["processes"], "connections_per_worker": spread_over,
           "rss_empty_bytes": rss_empty["server"], "rss_idle_bytes": rss_idle["server"],
           "redis_rss_empty_bytes": rss_empty["redis"], "redis_rss_idle_bytes": rss_idle["redis"],
           "rss_per_connection_bytes": round((sum(rss_idle.values()) - sum(rss_empty.values())) / ready),
           "redis_rss_per_connection_bytes": round((rss_idle["redis"] - rss_empty["redis"]) / ready),
           "ramp": ramp, "latency": latency, "saturation": saturation, "publish_failures": publish_failures[:5],
           "metrics_scrapes": scraped, "storm": stormed}
    row["notes"] = _notes(row, cores)
    return row


def _ramp(connected: dict, server_cpu: float, handshakes: Sequence[int]) -> dict:
    """How fast the subscribers connected: all of them, each handshake, and the server's CPU time
    (all its processes, and its redis-server) per handshake."""
    seconds = connected["seconds"]
    summary = summarize_ns(handshakes)
    summary.pop("curve", None)
    return {"seconds": seconds, "per_second": round(connected["ready"] / seconds) if seconds else None,
            "failures": connected["failed"], "handshake": summary,
            "server_cpu_us_per_handshake": _per(server_cpu, connected["ready"])}


def _server_cpu(server: RunningServer) -> float:
    return sum(map(cpu_seconds, server.pids)) + (cpu_seconds(server.redis.pid) if server.redis else 0.0)


async def _publisher(target: Target, server: RunningServer, hub: str, key: str) -> Publisher:
    if target.trigger == "rest":
        return await RestPublisher.open(server.endpoint, hub, key)
    if target.trigger == "centrifugo":
        return await CentrifugoPublisher.open(server.port, BROADCAST_CHANNEL)
    return PipePublisher(server.stdin)


def _rss(server: RunningServer) -> dict[str, int]:
    """Resident memory of the server's processes together, and of its redis-server (0 without one)."""
    return {"server": sum(map(rss_bytes, server.pids)), "redis": rss_bytes(server.redis.pid) if server.redis else 0}


async def _latency(gens: list[LoadGen], publisher: Publisher, meter: _Meter, settings: Settings, cores: CorePlan,
                   progress: Progress, at: float, scratch: Path) -> dict:
    await asyncio.gather(*(g.command("latency", record_from=WARMUP) for g in gens))
    total = WARMUP + settings.messages
    interval = 1.0 / settings.rate
    lasts: list[int] = []
    deliveries = timeouts = seq = 0
    before = meter.read()
    started = last_keepalive = time.monotonic()
    deadline = started + settings.duration
    paused, paused_wall = _Cpu(), 0.0  # keep-alive pauses, left out of the per-delivery figures
    while seq < total and time.monotonic() < deadline:
        if settings.pong_pauses and time.monotonic() - last_keepalive >= KEEPALIVE_EVERY:
            pause_began = time.monotonic()
            paused += await _keepalive(gens, meter)
            last_keepalive = time.monotonic()
            paused_wall += last_keepalive - pause_began
        sent_at = time.monotonic()
        await publisher.send(payload.make(seq, settings.payload_bytes))
        try:
            got = await asyncio.gather(*(g.expect("delivered", BROADCAST_TIMEOUT, _of_seq(seq)) for g in gens))
            deliveries += sum(e["count"] for e in got)
            if seq >= WARMUP:
                lasts.append(max(e["max_ns"] for e in got))
        except TimeoutError:
            timeouts += 1
        seq += 1
        progress.detail(at + 0.4 * seq / total, f"{seq}/{total}")
        await asyncio.sleep(max(MIN_GAP, interval - (time.monotonic() - sent_at)))
    elapsed = time.monotonic() - started
    cpu = meter.read() - before - paused
    samples = await collect(gens, scratch, "samples", EVENT_TIMEOUT)
    return {"broadcasts": max(seq - WARMUP, 0), "warmup": WARMUP, "timeouts": timeouts,
            "rate_per_second": round(seq / elapsed, 2), **summarize_ns(samples),
            "last_delivery": _last_delivery(lasts),
            "server_cpu_us_per_delivery": _per(cpu.server, deliveries),
            "redis_cpu_us_per_delivery": _per(cpu.redis, deliveries) if meter.redis else None,
            "loadgen_cpu_us_per_message": _per(cpu.loadgens, deliveries),
            "keepalive_pauses_seconds": round(paused_wall, 2),
            "other_processes": cpu.others(elapsed - paused_wall, cores)}


async def _keepalive(gens: list[LoadGen], meter: _Meter) -> _Cpu:
    """Every subscriber pongs, then wait until the server has read the pongs (so that its heartbeat
    never pings in the middle of a broadcast); the CPU it took."""
    before = meter.read()
    await asyncio.gather(*(g.command("keepalive") for g in gens))
    last, deadline = meter.read(), time.monotonic() + QUIET_LIMIT
    while time.monotonic() < deadline:
        await asyncio.sleep(QUIET_WINDOW)
        now = meter.read()
        if now.server - last.server < QUIET_SHARE * QUIET_WINDOW:
            break
        last = now
    return meter.read() - before


def _of_seq(seq: int) -> Callable[[dict], bool]:
    return lambda event: event["seq"] == seq


def _last_delivery(lasts: list[int]) -> dict:
    summary = summarize_ns(lasts)
    return {k: summary[k] for k in ("samples", "p50", "p99", "max") if k in summary}


async def _saturation(gens: list[LoadGen], publisher: Publisher, meter: _Meter, settings: Settings,
                      cores: CorePlan, ready: int, progress: Progress, at: float) -> dict:
    messages = max(1, math.ceil(settings.burst_deliveries / ready))
    texts = [payload.make(i, settings.payload_bytes) for i in range(messages)]
    runs = []
    total = _Cpu()
    wall = 0.0
    for run in range(settings.runs):
        progress.detail(at + 0.4 * run / settings.runs, f"run {run + 1}/{settings.runs}")
        await asyncio.gather(*(g.command("count", messages=messages) for g in gens))
        before = meter.read()
        start_ns = time.monotonic_ns()
        await publisher.burst(texts)
        try:
            done = await asyncio.gather(*(g.expect("complete", RUN_TIMEOUT) for g in gens))
            end_ns, delivered, complete = max(e["t_ns"] for e in done), sum(e["delivered"] for e in done), True
        except TimeoutError:
            for gen in gens:
                gen.send("tally")
            tallies = await asyncio.gather(*(g.expect("tally", EVENT_TIMEOUT) for g in gens))
            end_ns, delivered, complete = time.monotonic_ns(), sum(e["delivered"] for e in tallies), False
        cpu = meter.read() - before
        seconds = (end_ns - start_ns) / 1e9
        runs.append({"messages": messages, "expected": messages * ready, "deliveries": delivered,
                     "complete": complete, "seconds": round(seconds, 4),
                     "per_second": round(delivered / seconds), "server_cpu_seconds": round(cpu.server, 3)})
        total += cpu
        wall += seconds
        await publisher.settle()
        await asyncio.sleep(RUN_GAP)
    deliveries = sum(r["deliveries"] for r in runs)
    return {"runs": runs, "seconds": round(wall, 3), "deliveries_per_second": spread([r["per_second"] for r in runs]),
            "server_cpu_us_per_delivery": _per(total.server, deliveries),
            "redis_cpu_us_per_delivery": _per(total.redis, deliveries) if meter.redis else None,
            "loadgen_cpu_us_per_message": _per(total.loadgens, deliveries),
            "server_core_busy": round(total.server / wall, 3),  # cores' worth: above 1 for several workers
            "loadgen_cores_busy": round((total.loadgens + total.publisher) / wall / max(1, len(cores.load or ())), 3),
            "cpus_busy": round(total.all_cpus / wall / len(cores.cpus), 3),
            "other_processes": total.others(wall, cores)}


def _per(cpu_seconds_spent: float, count: int) -> float | None:
    return round(cpu_seconds_spent * 1e6 / count, 3) if count else None


def _notes(row: dict, cores: CorePlan) -> list[str]:
    """What makes a row's figures less than they seem, and what they are made of when that is not
    obvious (a deployment of several processes, Redis)."""
    notes = _deployment(row, cores)
    latency, saturation = row["latency"], row["saturation"]
    if row["connect_failures"]:
        notes.append(f"{row['connect_failures']} of {row['connections']} subscribers failed to connect "
                     f"({row['connect_error']})")
    if latency["timeouts"]:
        notes.append(f"{latency['timeouts']} isolated broadcasts were not fully delivered in {BROADCAST_TIMEOUT} s")
    load_us, server_us = latency["loadgen_cpu_us_per_message"] or 0, latency["server_cpu_us_per_delivery"] or 0
    if load_us > server_us:
        notes.append(f"latency: the load generator spent {load_us:.2f} us per message, the server {server_us:.2f} us "
                     f"per delivery, so the tail includes load-generator queueing")
    if not all(r["complete"] for r in saturation["runs"]):
        notes.append(f"saturation: a run did not complete within {RUN_TIMEOUT} s")
    if saturation["seconds"] >= JUDGED_SECONDS:
        notes.extend(_shared_bottleneck(saturation) if row["workers"] > 1 else _bottleneck(saturation))
    for phase, part in (("latency", latency), ("saturation", saturation)):
        others = part["other_processes"]
        if max(share or 0 for share in others.values()) > DISTURBED:
            taken = ", ".join(f"{share:.0%} of {_WHERE[where]}" for where, share in others.items() if share is not None)
            notes.append(f"{phase}: other processes took {taken}: figures are disturbed")
    if row["publish_failures"]:
        notes.append(f"publish failures: {row['publish_failures'][0]}")
    scraped = row["metrics_scrapes"]
    if scraped:
        failed = f"; {len(scraped['failures'])} failed: {scraped['failures'][0]}" if scraped["failures"] else ""
        notes.append(f"/metrics scraped every {scraped['interval_seconds']:g} s during the run: {scraped['scrapes']} "
                     f"answers of {scraped['mean_bytes']} bytes, {scraped['mean_ms']} ms each on average as the "
                     f"scraper waited, {scraped['server_mean_ms']} ms of the server's loop{failed}")
    return notes


_WHERE = {"server_core": "the server core", "load_cores": "the load-generator core(s)", "all_cpus": "all CPUs"}


def _deployment(row: dict, cores: CorePlan) -> list[str]:
    """Where a multi-process or Redis server ran and how its figures add up."""
    notes = []
    if not row["server_pinned"] and cores.load is not None:
        notes.append(f"server not pinned: the parent, its {row['workers']} workers and redis-server used all CPUs "
                     f"({','.join(map(str, sorted(cores.cpus)))}), shared with the load generators and publisher "
                     f"(pinned to CPU {','.join(map(str, sorted(cores.load)))})")
    if row["connections_per_worker"]:
        notes.append("connections per worker (the kernel's SO_REUSEPORT hashing): "
                     + ", ".join(map(str, row["connections_per_worker"])))
    if row["redis"]:
        redis_kib, total_kib = row["redis_rss_per_connection_bytes"] / 1024, row["rss_per_connection_bytes"] / 1024
        sat = row["saturation"]
        where = "pinned with the server" if row["server_pinned"] else "not pinned"
        notes.append(f"RSS/conn and srv us/deliv include redis-server ({where}): {redis_kib:.1f} of "
                     f"{total_kib:.1f} KiB, {_us(sat['redis_cpu_us_per_delivery'])} of "
                     f"{_us(sat['server_cpu_us_per_delivery'])} us")
    return notes


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _shared_bottleneck(saturation: dict) -> list[str]:
    """With the server free on all CPUs, how busy the machine was tells more than any one core."""
    cpus = saturation["cpus_busy"]
    text = (f"saturation: the server used {saturation['server_core_busy']:.2f} cores' worth, the load side "
            f"{saturation['loadgen_cores_busy']:.0%} of its core(s), all CPUs {cpus:.0%} busy")
    return [text + (": the CPUs were the bottleneck, shared by server and load generator" if cpus > BUSY else "")]


def _bottleneck(saturation: dict) -> list[str]:
    """Which side limited deliveries per second, read from how busy each core was."""
    server, load = saturation["server_core_busy"], saturation["loadgen_cores_busy"]
    cores = f"saturation: server core {server:.0%} busy, load-generator core(s) {load:.0%}"
    if load > BUSY:
        culprit = "nearly the bottleneck too" if server > BUSY else "the bottleneck"
        return [f"{cores}: the load generator was {culprit}"]
    if server <= BUSY:
        return [f"{cores}: the server waited for input part of the time"]
    return []
