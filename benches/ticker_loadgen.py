"""A ticker load-generator process: holds its share of the subscribers and reports what they read.

    python -m benches.ticker_loadgen --port P --dialect webpubsub --clients FILE [--source-ip 127.0.0.2]

FILE has one JSON object per subscriber: `path` (the request target), `protocol` (a subprotocol or
null), `hello` (text sent after the upgrade, or null), `slow` (whether it reads slowly in the slow
phase) and `share` (its deliveries per tick, on average). The orchestrator (benches.ticker) drives it
with one JSON command per stdin line and reads JSON events from stdout. It exits on stdin EOF or at
its deadline, whichever comes first.

Commands: `record` (reset the counters and keep a latency sample every N deliveries), `report` (stop
sampling, write the samples to files and say what was read since `record`), `lost` (who was
disconnected since `record`, with which close codes), `count` (say `complete` once N more deliveries
arrived), `tally`, and `slow` (the slow subscribers read at a fraction of the bytes they are sent at a
given tick rate; fraction 0 ends it).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import socket
import sys
import time

import uvloop

from .loadgen import emit
from .ticker_client import SLOW_RCVBUF, Book, TickerSubscriber
from .ws_client import DIALECTS
from .ws_frames import masked_frame, upgrade_request

__all__ = ["main"]

CONNECT_TIMEOUT = 15.0


class TickerFleet:
    def __init__(self) -> None:
        self.healthy = Book()
        self.slow = Book()
        self.delivered = 0
        self.target = -1
        self.counted_from = 0
        self.ready: set[TickerSubscriber] = set()
        self.connecting: dict[TickerSubscriber, asyncio.Future[None]] = {}
        self.lost = {"healthy": 0, "slow": 0}
        self.codes: collections.Counter[str] = collections.Counter()

    async def connect(self, host: str, port: int, clients: list[dict], dialect: str, source_ip: str | None,
                      concurrency: int) -> tuple[int, str | None]:
        """Open every subscriber, `concurrency` handshakes at a time; (failures, first error)."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(concurrency)

        async def one(client: dict) -> str | None:
            async with gate:
                request = upgrade_request(host, port, client["path"], client["protocol"])
                hello = masked_frame(client["hello"].encode()) if client["hello"] else None
                sub = TickerSubscriber(self, request, dialect, hello, client["slow"], client["share"])
                waiter = self.connecting[sub] = loop.create_future()
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    if client["slow"]:  # before connecting: the window is negotiated with it
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
                    sock.setblocking(False)
                    if source_ip:
                        sock.bind((source_ip, 0))
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        await loop.sock_connect(sock, (host, port))
                        await loop.create_connection(lambda: sub, sock=sock)
                        await waiter
                    return None
                except (OSError, TimeoutError, ConnectionError) as exc:
                    sock.close()
                    self.connecting.pop(sub, None)
                    if sub.transport is not None:
                        sub.transport.abort()
                    return f"{type(exc).__name__}: {exc}"

        errors = [e for e in await asyncio.gather(*(one(c) for c in clients)) if e]
        return len(errors), (errors[0] if errors else None)

    # --- what subscribers report ------------------------------------------------------------
    def on_ready(self, sub: TickerSubscriber) -> None:
        waiter = self.connecting.pop(sub, None)
        if waiter is not None and not waiter.done():
            self.ready.add(sub)
            waiter.set_result(None)

    def on_failed(self, sub: TickerSubscriber, reason: str) -> None:
        waiter = self.connecting.pop(sub, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(reason))

    def on_lost(self, sub: TickerSubscriber) -> None:
        if sub in self.ready:
            self.ready.discard(sub)
            self.lost["slow" if sub.slow else "healthy"] += 1
            self.codes[str(sub.close_code) if sub.close_code is not None else "no close frame"] += 1
        self.on_failed(sub, "connection closed during the handshake")

    def on_target(self) -> None:
        emit("complete", t_ns=time.monotonic_ns(), delivered=self.delivered - self.counted_from)

    # --- commands ---------------------------------------------------------------------------
    def record(self, every: int, slow_every: int) -> None:
        self.healthy.reset(every)
        self.slow.reset(slow_every)
        self.lost = {"healthy": 0, "slow": 0}
        self.codes.clear()

    def report(self, prefix: str) -> dict:
        """Stop sampling; write each class's samples to `prefix`.healthy and .slow; what each class read."""
        found = {}
        for name, book in (("healthy", self.healthy), ("slow", self.slow)):
            with open(f"{prefix}.{name}", "wb") as out:
                book.samples.tofile(out)
            found[name] = {"delivered": book.delivered, "samples": len(book.samples)}
            book.reset(0)
        return found

    def losses(self) -> dict:
        """Subscribers lost since `record`, per class and per close code, and those still connected."""
        return {"lost": dict(self.lost), "codes": dict(self.codes),
                "ready": {"healthy": sum(not s.slow for s in self.ready), "slow": sum(s.slow for s in self.ready)}}

    def count(self, deliveries: int) -> None:
        self.counted_from = self.delivered
        self.target = self.delivered + deliveries
        if deliveries <= 0:
            self.on_target()

    def read_slowly(self, tick_rate: float, fraction: float) -> None:
        """Slow subscribers read `fraction` of the bytes a tick rate sends them (their own bytes per tick
        so far, else the fleet's), or at full speed again with fraction 0."""
        measured = [s.bytes_per_tick() for s in self.ready]
        known = [m for m in measured if m]
        fallback = sum(known) / len(known) if known else 200.0
        for sub in self.ready:
            if sub.slow:
                sub.read_slowly(fraction * tick_rate * sub.share * (sub.bytes_per_tick() or fallback))

    def close(self) -> None:
        for sub in list(self.ready) + list(self.connecting):
            if sub.transport is not None:
                sub.transport.abort()


async def _commands(fleet: TickerFleet, deadline: float) -> None:
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
        if name == "record":
            fleet.record(command["every"], command["slow_every"])
        elif name == "report":
            emit("report", **fleet.report(command["prefix"]))
            continue
        elif name == "lost":
            emit("lost", **fleet.losses())
            continue
        elif name == "count":
            fleet.count(command["deliveries"])
        elif name == "tally":
            emit("tally", delivered=fleet.delivered - fleet.counted_from)
            continue
        elif name == "slow":
            fleet.read_slowly(command["tick_rate"], command["fraction"])
        else:
            raise ValueError(f"unknown command {name!r}")
        emit("ok", cmd=name)


async def _run(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.deadline
    with open(args.clients) as f:
        clients = [json.loads(line) for line in f]
    fleet = TickerFleet()
    try:
        failed, error = await fleet.connect(args.host, args.port, clients, args.dialect, args.source_ip,
                                            args.concurrency)
        emit("connected", ready=len(fleet.ready), failed=failed, error=error)
        await _commands(fleet, deadline)
    finally:
        fleet.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.ticker_loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dialect", choices=DIALECTS, required=True)
    parser.add_argument("--clients", required=True, help="one JSON object per subscriber")
    parser.add_argument("--source-ip", help="bind subscribers to this 127.0.0.x (more ephemeral ports)")
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--deadline", type=float, default=1800.0, help="exit after this many seconds")
    uvloop.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
