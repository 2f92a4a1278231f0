"""A load-generator process: holds N subscribers and reports what they receive, as JSON lines on stdout.

    python -m benches.loadgen --port P --path '/client/hubs/bench?access_token=...' --raw 500 --json 500

The orchestrator (benches.fanout, benches.scale) drives it with one JSON command per stdin line and
waits for the answer; several of these processes share the load-generator cores when N is large (a process
may hold only so many open files). It exits on stdin EOF or at its deadline, whichever comes first.

Every handshake's time (from the connect call to the upgrade, or to the `connected` message) is kept
for the `handshakes` command. After the `storm` command, a subscriber the server closes comes back at
once, and on failure retries after about `retry_delay` seconds (jittered by half, so the
retries of a crowd do not stay in step), until `seconds` have passed; at most `concurrency` handshakes
are in flight at once (more would time out in this process's own queue: one core holds thousands of
clients here, where each real client has its own); `restored` reports when this process had all its
subscribers back.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import time
from array import array
from dataclasses import dataclass, field

import uvloop

from .centrifugo_subscriber import CentrifugoSubscriber
from .subscriber import JSON_SUBPROTOCOL, Subscriber, upgrade_request

__all__ = ["Fleet", "main"]

CONNECT_TIMEOUT = 15.0
KEEPALIVE_EVERY = 5.0  # well inside fastpush's 20 s: its heartbeat then never pings during a measurement
KEEPALIVE_SETTLE = 0.3  # time for the server to read the pongs before anything is measured
STORM_ATTEMPTS = 1000  # per subscriber, on top of the storm's own time limit


def emit(event: str, **fields: object) -> None:
    """One event line to the orchestrator."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


@dataclass
class _Storm:
    """A reconnect storm under way: how many subscribers must come back, by when, and what failed."""

    expected: int
    deadline: float
    retry_delay: float
    gate: asyncio.Semaphore
    lost: int = 0
    failures: int = 0
    gave_up: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    restored_ns: int | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


class Fleet:
    """This process's subscribers: connects them, times messages per broadcast, counts bursts, brings
    them back after a reconnect storm."""

    def __init__(self, host: str, port: int, source_ip: str | None, kind: type[Subscriber] = Subscriber) -> None:
        self.host, self.port, self.kind = host, port, kind
        self.local_addr = (source_ip, 0) if source_ip else None
        self.handshakes = array("q")  # ns per successful handshake, since the last `handshakes` command
        self.storm: _Storm | None = None
        self.counting = False
        self.ready: set[Subscriber] = set()
        self.connecting: dict[Subscriber, tuple[asyncio.Future[None], int]] = {}  # waiter, began ns
        self.record_from = 0
        self.samples = array("q")
        self.per_seq: dict[int, list[int]] = {}  # seq -> [deliveries, max latency ns]
        self.remaining = 0
        self.last_keepalive = time.monotonic()

    # --- connecting -------------------------------------------------------------------------
    async def connect(self, requests: list[bytes], concurrency: int) -> tuple[int, str | None]:
        """Open one subscriber per request, `concurrency` handshakes at a time; (failures, first error)."""
        gate = asyncio.Semaphore(concurrency)

        async def one(request: bytes) -> str | None:
            async with gate:
                return await self._open(request)

        errors = [e for e in await asyncio.gather(*(one(r) for r in requests)) if e]
        return len(errors), (errors[0] if errors else None)

    async def _open(self, request: bytes) -> str | None:
        """One subscriber through its handshake: None (its time kept), or why it failed."""
        loop = asyncio.get_running_loop()
        sub = self.kind(self, request)
        waiter = loop.create_future()
        self.connecting[sub] = (waiter, time.monotonic_ns())
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.create_connection(lambda: sub, self.host, self.port, local_addr=self.local_addr)
                await waiter
        except (OSError, TimeoutError, ConnectionError) as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                return None  # ready just before the time ran out, but this task resumed after: it counts
            self.connecting.pop(sub, None)
            if sub.transport is not None:
                sub.transport.abort()
            return f"{type(exc).__name__}: {exc}"
        return None

    # --- a reconnect storm --------------------------------------------------------------------
    def arm_storm(self, seconds: float, retry_delay: float, concurrency: int) -> None:
        """From now on a subscriber that the server closes reconnects; `restored` once all are back.
        Frames are read again, not just counted: the server's pings must be answered, or it drops the
        subscribers that came back once they have been silent for its idle timeout."""
        self.counting = False
        self.handshakes = array("q")
        self.storm = _Storm(len(self.ready), time.monotonic() + seconds, retry_delay, asyncio.Semaphore(concurrency))
        self.storm.timer = asyncio.get_running_loop().call_later(seconds, self._storm_over)

    async def _come_back(self, storm: _Storm, request: bytes) -> None:
        """Reconnect at once, then after a jittered delay per failure, until back or out of time."""
        for _ in range(STORM_ATTEMPTS):
            async with storm.gate:
                error = await self._open(request)
            if error is None:
                return
            storm.failures += 1
            # refusals by exception name; a server's answer (a status line, a close) in full
            storm.errors[error if error.startswith("ConnectionError:") else error.split(":")[0]] += 1
            delay = storm.retry_delay * random.uniform(0.5, 1.5)
            if time.monotonic() + delay > storm.deadline:
                break
            await asyncio.sleep(delay)
        storm.gave_up += 1

    def _storm_over(self) -> None:
        """Report once: when every subscriber is back, or when the storm's time is up."""
        storm = self.storm
        if storm is None:
            return
        self.storm = None
        if storm.timer is not None:
            storm.timer.cancel()
        for task in storm.tasks:
            task.cancel()
        emit("restored", ready=len(self.ready), expected=storm.expected, lost=storm.lost, failures=storm.failures,
             gave_up=storm.gave_up, errors=dict(storm.errors.most_common(5)), restored_ns=storm.restored_ns)

    def on_ready(self, sub: Subscriber) -> None:
        """Count the handshake here, not in the task that awaits it: once the last subscriber is back the
        storm's tasks are cancelled, and one that had not resumed yet would lose its time."""
        entry = self.connecting.pop(sub, None)
        if entry is None or entry[0].done():
            return
        waiter, began = entry
        now = time.monotonic_ns()
        self.handshakes.append(now - began)
        self.ready.add(sub)
        waiter.set_result(None)
        storm = self.storm
        if storm is not None and storm.restored_ns is None and len(self.ready) >= storm.expected:
            storm.restored_ns = now
            self._storm_over()

    def on_failed(self, sub: Subscriber, reason: str) -> None:
        entry = self.connecting.pop(sub, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(ConnectionError(reason))

    def on_lost(self, sub: Subscriber) -> None:
        was_ready = sub in self.ready
        self.ready.discard(sub)
        self.on_failed(sub, "connection closed during the handshake")
        storm = self.storm
        if was_ready and storm is not None:
            storm.lost += 1
            task = asyncio.get_running_loop().create_task(self._come_back(storm, sub.request))
            storm.tasks.add(task)
            task.add_done_callback(storm.tasks.discard)

    async def keepalive_if_due(self) -> None:
        """A pong from every subscriber when they have been quiet for a while, then a pause: a phase
        must not start while the server is busy reading them."""
        if time.monotonic() - self.last_keepalive < KEEPALIVE_EVERY:
            return
        for sub in self.ready:
            sub.keepalive()
        self.last_keepalive = time.monotonic()
        await asyncio.sleep(KEEPALIVE_SETTLE)

    # --- timing isolated broadcasts ---------------------------------------------------------
    def start_timing(self, record_from: int) -> None:
        self.counting = False
        self.record_from = record_from

    def on_stamp(self, send_ns: int, seq: int, now_ns: int) -> None:
        latency = now_ns - send_ns
        if seq >= self.record_from:
            self.samples.append(latency)
        tally = self.per_seq.get(seq)
        if tally is None:
            tally = self.per_seq[seq] = [0, 0]
        tally[0] += 1
        if latency > tally[1]:
            tally[1] = latency
        if tally[0] >= len(self.ready):
            del self.per_seq[seq]
            emit("delivered", seq=seq, count=tally[0], max_ns=tally[1])

    # --- counting bursts --------------------------------------------------------------------
    def start_counting(self, messages: int) -> None:
        """Expect `messages` more frames on every subscriber, each as long as its last timed one."""
        self.per_seq.clear()
        self.remaining = 0
        for sub in self.ready:
            sub.received = 0
            sub.target = messages * sub.frame_len
            self.remaining += sub.target > 0
        self.counting = True
        if not self.remaining:
            emit("complete", t_ns=time.monotonic_ns(), delivered=0)

    def on_counted(self, sub: Subscriber) -> None:
        self.remaining -= 1
        if not self.remaining:
            emit("complete", t_ns=time.monotonic_ns(), delivered=self.counted())

    def counted(self) -> int:
        return sum(s.received // s.frame_len for s in self.ready if s.frame_len)

    def close(self) -> None:
        for sub in list(self.ready) + list(self.connecting):
            if sub.transport is not None:
                sub.transport.abort()


async def _commands(fleet: Fleet, deadline: float) -> None:
    """Answer the orchestrator's commands until stdin EOF or the deadline."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = await asyncio.wait_for(reader.readline(), left)
        except TimeoutError:
            return
        if not line:
            return
        command = json.loads(line)
        name = command["cmd"]
        if name == "latency":
            await fleet.keepalive_if_due()
            fleet.start_timing(command["record_from"])
        elif name == "keepalive":
            await fleet.keepalive_if_due()
        elif name == "count":
            await fleet.keepalive_if_due()
            fleet.start_counting(command["messages"])
        elif name == "tally":
            emit("tally", delivered=fleet.counted())
            continue
        elif name == "samples":
            emit("samples", count=_dump(fleet.samples, command["path"]))
            fleet.samples = array("q")
            continue
        elif name == "handshakes":
            emit("handshakes", count=_dump(fleet.handshakes, command["path"]))
            fleet.handshakes = array("q")
            continue
        elif name == "storm":
            fleet.arm_storm(command["seconds"], command["retry_delay"], command["concurrency"])
        else:
            raise ValueError(f"unknown command {name!r}")
        emit("ok", cmd=name)


def _dump(values: array, path: str) -> int:
    """Write `values` (ns) to `path` for the orchestrator (they can be millions); how many."""
    with open(path, "wb") as out:
        values.tofile(out)
    return len(values)


async def _run(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.deadline
    centrifugo = args.dialect == "centrifugo"  # its clients offer no subprotocol
    requests = ([upgrade_request(args.host, args.port, args.path, None)] * args.raw
                + [upgrade_request(args.host, args.port, args.path, None if centrifugo else JSON_SUBPROTOCOL)]
                * args.json)
    fleet = Fleet(args.host, args.port, args.source_ip, CentrifugoSubscriber if centrifugo else Subscriber)
    try:
        began_ns = time.monotonic_ns()
        failed, error = await fleet.connect(requests, args.concurrency)
        emit("connected", ready=len(fleet.ready), failed=failed, error=error, began_ns=began_ns,
             t_ns=time.monotonic_ns())
        await _commands(fleet, deadline)
    finally:
        fleet.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="request target, e.g. /client/hubs/h?access_token=...")
    parser.add_argument("--raw", type=int, default=0, help="subscribers without subprotocol")
    parser.add_argument("--json", type=int, default=0, help=f"subscribers with {JSON_SUBPROTOCOL}")
    parser.add_argument("--dialect", choices=("webpubsub", "centrifugo"), default="webpubsub",
                        help="webpubsub: the upgrade is all (raw) or the JSON subprotocol's `connected` follows; "
                             "centrifugo: a connect command subscribes to its broadcast channel")
    parser.add_argument("--source-ip", help="bind subscribers to this 127.0.0.x (more ephemeral ports)")
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--deadline", type=float, default=900.0, help="exit after this many seconds")
    uvloop.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
