"""fastpush at scale on one machine: `fastpush serve --workers N` on Redis, from 10,000 to 100,000 connections.

    python -m benches.scale                                         # 10,000, 30,000 and 100,000; 7 workers
    python -m benches.scale --connections 10000,30000 --workers 3 --json-out scale.json --plot scale.png
    python -m benches.scale --quick                                 # smoke run: 300 subscribers, 2 workers
    python -m benches.scale --connections 5000 --connect-handler-ms 5   # every handshake asks an upstream

For each N it runs benches.fanout's procedure (benches/measure.py) on one deployment, the same for
every N: `fastpush serve --workers W --redis-url ...` with a redis-server of its own, published to
through REST. A process may hold only so many open files, so the workers share the connections (the
kernel spreads them, SO_REUSEPORT) and the subscribers come from several load-generator processes,
each from its own loopback address above 25,000 (127.0.0.1, .2, ...; about 28,000 ephemeral ports
per address pair). Per N: the ramp (connections per second, failures, handshake times), memory per
connection over all the server's processes and its redis-server, isolated broadcasts to everyone
(p50/p99/max), saturation deliveries per second, then a reconnect storm (benches/storm.py): every
worker restarted at once, and how long until every subscriber is back. With --connect-handler-ms
the hub has a `connect` event handler (benches/connect_upstream.py, answering after that delay), so
every handshake, the storm's included, waits for it; the storm then also reports the handler's
peak concurrency.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import functools
import json
import math
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from .connect_upstream import ConnectUpstream
from .environment import machine, versions
from .fanout import FD_MARGIN, _connections, _positive, run_bench
from .measure import Settings, measure
from .plot import plot_scaling
from .procs import Children, plan_cores
from .progress import Progress
from .redis_server import missing
from .servers import Target, redis_targets
from .storm import reconnect_storm

__all__ = ["main"]

PER_WORKER = 15_000  # connections per worker the default --workers plans for (a worker may open 20,000 files)
SPREAD_MARGIN = 1.2  # the kernel's spread over workers is uneven: room for the busiest
DEFAULTS = {"connections": [10_000, 30_000, 100_000], "messages": 50, "duration": 30.0,
            "burst_deliveries": 1_000_000, "runs": 3, "storm_seconds": 120.0}
QUICK = {"connections": [300], "messages": 10, "duration": 5.0, "burst_deliveries": 20_000, "runs": 1,
         "storm_seconds": 30.0, "workers": 2}
HEADERS = ("N", "workers", "ramp s", "conn/s", "conn fail", "hs p99 ms", "srv us/hs", "RSS/conn KiB", "p50 ms",
           "p99 ms", "max ms", "deliveries/s", "storm back s", "storm hs fail", "storm hs p99 ms", "storm gave up")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benches.scale", description=__doc__.split("\n")[0],
                                     epilog="Everything listens on loopback; every child process is killed on exit.")
    parser.add_argument("--connections", type=_connections,
                        help="comma-separated N values (default 10000,30000,100000)")
    parser.add_argument("--workers", type=_positive,
                        help=f"fastpush workers, the same for every N (default: one per {PER_WORKER} of the largest N, "
                             "at least 2)")
    parser.add_argument("--messages", type=int, help="isolated broadcasts timed per N (default 50)")
    parser.add_argument("--rate", type=float, default=10.0, help="isolated broadcasts per second at most (default 10)")
    parser.add_argument("--duration", type=float, help="seconds the latency phase may take per N (default 30)")
    parser.add_argument("--burst-deliveries", type=int, help="deliveries per saturation run (default 1000000)")
    parser.add_argument("--runs", type=int, help="saturation runs; the median is reported (default 3)")
    parser.add_argument("--per-loadgen", type=int, default=15_000,
                        help="subscribers per load-generator process (default 15000)")
    parser.add_argument("--payload-bytes", type=int, default=100, help="message size (default 100)")
    parser.add_argument("--storm-seconds", type=float,
                        help="how long the subscribers may take to come back after the restart (default 120)")
    parser.add_argument("--retry-delay", type=float, default=1.0,
                        help="seconds a subscriber waits after a failed reconnect, jittered by half (default 1)")
    parser.add_argument("--storm-concurrency", type=_positive, default=500,
                        help="reconnect handshakes in flight per load-generator process during the storm (default 500)")
    parser.add_argument("--no-storm", action="store_true", help="leave the reconnect storm out")
    parser.add_argument("--server-pings", action="store_true",
                        help="no pong pauses in the latency phase: the server's keep-alive pings the subscribers "
                             "while broadcasts are timed, as it pings clients that never speak")
    parser.add_argument("--connect-handler-ms", type=float, metavar="MS",
                        help="give the hub a connect event handler (a local upstream) answering after MS ms")
    parser.add_argument("--json-out", type=Path, help="write machine, versions, parameters and results here")
    parser.add_argument("--plot", type=Path, help="write each figure against N as a PNG (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 subscribers, 2 workers, short phases")
    return parser


def _chosen(args: argparse.Namespace) -> dict:
    base = {**DEFAULTS, **(QUICK if args.quick else {})}
    given = {name: value for name in (*base, "workers") if (value := getattr(args, name, None)) is not None}
    chosen = {**base, **given}
    chosen.setdefault("workers", max(2, math.ceil(max(chosen["connections"]) / PER_WORKER)))
    return chosen


def _check(chosen: dict, settings: Settings) -> None:
    """Refuse what cannot work before starting anything."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    busiest = max(chosen["connections"]) / chosen["workers"] * SPREAD_MARGIN
    if busiest + FD_MARGIN > files or settings.per_loadgen + FD_MARGIN > files:
        raise SystemExit(f"a process may open at most {files} files here: use more --workers (the busiest may get "
                         f"{busiest:.0f}) or a smaller --per-loadgen")
    if chosen["workers"] < 2 and not chosen.get("no_storm"):
        raise SystemExit("the reconnect storm restarts workers: --workers must be at least 2 (or --no-storm)")
    if reason := missing():
        raise SystemExit(f"benches.scale needs redis-server: {reason}")


async def _run(args: argparse.Namespace, chosen: dict, settings: Settings) -> list[dict]:
    target = redis_targets(chosen["workers"])[-1]
    upstream = None
    if args.connect_handler_ms is not None:
        upstream = ConnectUpstream(args.connect_handler_ms / 1000)
        await upstream.start()
    cores = plan_cores()
    if cores.load:
        os.sched_setaffinity(0, cores.load)  # the publisher runs on the load side too
    print(f"cores: {cores.unpinned_server().describe()}", flush=True)
    storm = None if args.no_storm else functools.partial(reconnect_storm, seconds=chosen["storm_seconds"],
                                                         retry_delay=args.retry_delay,
                                                         concurrency=args.storm_concurrency)
    if storm is not None and upstream is not None:
        storm = functools.partial(_storm_with_upstream, storm, upstream)
    progress = Progress(len(chosen["connections"]))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fastpush-scale-") as scratch:
        if upstream is not None:
            target = _with_config(target, upstream.config_file(Path(scratch), settings.hub))
        children = Children(Path(scratch))
        try:
            for n in chosen["connections"]:
                try:
                    rows.append(await measure(target, n, settings, cores, children, progress, len(rows),
                                              Path(scratch), storm))
                except Exception as exc:  # one N failing must not lose the others' figures
                    rows.append({"label": target.label, "connections": n, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            progress.close()
            await children.close()
            if upstream is not None:
                await upstream.close()
    return rows


def _with_config(target: Target, config: Path) -> Target:
    command = target.command
    return dataclasses.replace(target, command=lambda key, url: [*command(key, url), "--config", str(config)])


async def _storm_with_upstream(storm: Callable[..., Awaitable[dict]], upstream: ConnectUpstream,
                               *args: object) -> dict:
    """The storm, and what its connect events did to the upstream."""
    upstream.reset()
    result = await storm(*args)
    result["connect_upstream"] = upstream.figures()
    return result


def table(rows: list[dict]) -> str:
    lines = [HEADERS]
    for row in rows:
        if "error" in row:
            lines.append((f"{row['connections']}", f"error: {row['error'].splitlines()[0]}"))
            continue
        ramp, latency, storm = row["ramp"], row["latency"], row.get("storm") or {}
        rate = row["saturation"]["deliveries_per_second"]["median"]
        lines.append((f"{row['connections']}", f"{row['workers']}", _f(ramp["seconds"], 1), _f(ramp["per_second"], 0),
                      f"{ramp['failures']}", _f(ramp["handshake"].get("p99"), 1),
                      _f(ramp["server_cpu_us_per_handshake"], 0),
                      _f(row["rss_per_connection_bytes"] / 1024, 1), _f(latency.get("p50"), 1),
                      _f(latency.get("p99"), 1), _f(latency.get("max"), 1), _f(rate, 0),
                      _f(storm.get("seconds"), 1), _f(storm.get("failed_handshakes"), 0),
                      _f(storm.get("handshake", {}).get("p99"), 1), _f(storm.get("gave_up"), 0)))
    widths = [max(len(line[i]) for line in lines if len(line) > i) for i in range(len(HEADERS))]
    return "\n".join("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(line)) for line in lines)


def _f(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def notes(rows: list[dict]) -> list[str]:
    """benches.fanout's notes per row, and what the storm's failures were."""
    lines = []
    for row in rows:
        for note in row.get("notes", []):
            lines.append(f"N={row['connections']}: {note}")
        storm = row.get("storm")
        if storm:
            if not storm["all_back"]:
                lines.append(f"N={row['connections']}: storm: only {storm['back']} of {storm['expected']} came back "
                             f"within {storm['limit_seconds']:g} s")
            if storm["errors"]:
                why = ", ".join(f"{count} {reason}" for reason, count in storm["errors"].items())
                lines.append(f"N={row['connections']}: storm: failed handshakes: {why}")
            if "connect_upstream" in storm:
                up = storm["connect_upstream"]
                lines.append(f"N={row['connections']}: storm: connect handler answering after {up['delay_ms']:g} ms: "
                             f"{up['answered']} connect events answered, at most {up['peak_in_flight']} at once")
            lines.append(f"N={row['connections']}: storm: connections per new worker: "
                         + ", ".join(map(str, storm["connections_per_worker"])))
    return lines


async def _main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    chosen = _chosen(args)
    chosen["no_storm"] = args.no_storm
    settings = Settings(payload_bytes=args.payload_bytes, rate=args.rate, messages=chosen["messages"],
                        duration=chosen["duration"], burst_deliveries=chosen["burst_deliveries"], runs=chosen["runs"],
                        json_fraction=0.5, per_loadgen=args.per_loadgen, pong_pauses=not args.server_pings)
    chosen["server_pings"] = args.server_pings
    _check(chosen, settings)
    started = time.monotonic()
    load_before = os.getloadavg()
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    rows = await _run(args, chosen, settings)
    load_after = os.getloadavg()
    print(table(rows), flush=True)
    print("\n" + "\n".join(notes(rows)), flush=True)
    print(f"\n{chosen['workers']} workers on one redis-server; payload {settings.payload_bytes} B, half "
          f"json.webpubsub.azure.v1 subscribers; latency: isolated broadcasts at most {settings.rate:g}/s; "
          f"saturation: median of {settings.runs} runs of {settings.burst_deliveries} deliveries; storm: every "
          f"worker restarted at once, failed reconnects retried after {args.retry_delay:g} s (jittered), at most "
          f"{args.storm_concurrency} handshakes in flight per load generator. "
          f"RSS/conn: all the server's processes and its redis-server. Load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after. Took {time.monotonic() - started:.0f} s.")
    if args.json_out:
        document = {"benchmark": "scale", "started": stamp, "command": ["python", "-m", "benches.scale", *sys.argv[1:]],
                    "seconds": round(time.monotonic() - started, 1), "machine": machine(), "versions": versions(),
                    "load_average": {"before": load_before, "after": load_after},
                    "parameters": {**chosen, **dataclasses.asdict(settings), "retry_delay": args.retry_delay,
                                   "connect_handler_ms": args.connect_handler_ms},
                    "results": rows}
        args.json_out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    if args.plot:
        why_not = plot_scaling(rows, args.plot)
        print(why_not or f"wrote {args.plot}")
    return 1 if any("error" in r or not (r.get("storm") or {"all_back": True})["all_back"] for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_bench("benches.scale", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
