"""The ticker benchmark: many subscribers, each following a few of many symbols, ticks at a sustained rate.

    python -m benches.ticker                          # 10,000 clients, 1,000 symbols, 20 each; every server
    python -m benches.ticker --quick                  # smoke run: 200 clients, 50 symbols, a few seconds a phase
    python -m benches.ticker --clients 2000 --servers fastpush,node-ws --json-out ticker.json
    python -m benches.ticker --conflate               # adds fastpush with conflateGroups = ["tick.*"]

Symbols are groups (fastpush), channels (Centrifugo) or topics (Node ws) with Zipf popularity; every
server gets the same subscribers and the same ticks, from one WebSocket publisher. For each server it
measures the capacity (deliveries per second when flooded), then latency at 25/50/75/90 % of it, then
a phase where 5 % of the subscribers read slowly. See benches/ticker_measure.py for the procedure and
benches/README.md for what each column means.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

from . import centrifugo
from .environment import machine, versions
from .fanout import run_bench
from .procs import Children, plan_cores
from .progress import Progress
from .ticker_measure import TickerSettings, measure_ticker
from .ticker_report import tables
from .ticker_servers import TICKER_TARGETS, TickerTarget, conflation_support, fastpush_conflating, prepare_target
from .ticker_workload import MAX_SYMBOLS, MIN_BYTES, Workload

__all__ = ["main"]

FD_MARGIN = 64
QUICK = {"clients": 200, "symbols": 50, "per_client": 5, "step_seconds": 2.0, "burst_deliveries": 20_000, "runs": 1,
         "slow_seconds": 3.0}
DEFAULTS = {"clients": 10_000, "symbols": 1_000, "per_client": 20, "step_seconds": 10.0,
            "burst_deliveries": 1_000_000, "runs": 3, "slow_seconds": 20.0}
SERVER_KEYS = tuple(t.key for t in TICKER_TARGETS)


def _fractions(text: str) -> tuple[float, ...]:
    loads = tuple(float(part) / 100 for part in text.split(",") if part.strip())
    if not loads or min(loads) <= 0 or max(loads) > 1:
        raise argparse.ArgumentTypeError("comma-separated percentages above 0, at most 100")
    return loads


def _servers(text: str) -> tuple[str, ...]:
    keys = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(keys) - set(SERVER_KEYS)
    if not keys or unknown:
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(SERVER_KEYS)}")
    return keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benches.ticker", description=__doc__.split("\n")[0],
                                     epilog="Everything listens on 127.0.0.1; every child process is killed on exit.")
    add = parser.add_argument
    add("--clients", type=int, help="subscribers (default 10000)")
    add("--symbols", type=int, help=f"symbols, i.e. groups (default 1000, at most {MAX_SYMBOLS})")
    add("--per-client", type=int, help="symbols each subscriber follows (default 20)")
    add("--zipf", type=float, default=1.0, help="exponent of the symbols' popularity (default 1.0)")
    add("--tick-zipf", type=float, default=0.0,
        help="exponent of how often each symbol ticks, by popularity rank (default 0: every symbol as often)")
    add("--payload-bytes", type=int, default=100, help=f"tick size (default 100, at least {MIN_BYTES})")
    add("--loads", type=_fractions, default=(0.25, 0.5, 0.75, 0.9),
        help="percentages of the capacity to measure latency at (default 25,50,75,90)")
    add("--step-seconds", type=float, help="seconds recorded per load (default 10)")
    add("--burst-deliveries", type=int, help="deliveries per capacity burst (default 1000000)")
    add("--runs", type=int, help="capacity bursts; the median is the capacity (default 3)")
    add("--slow-share", type=float, default=0.05, help="share of subscribers that read slowly (default 0.05)")
    add("--slow-read", type=float, default=0.25,
        help="share of the bytes they are sent that slow subscribers read (default 0.25)")
    add("--slow-load", type=float, default=0.5, help="load during the slow phase, share of capacity (default 0.5)")
    add("--slow-seconds", type=float, help="length of the slow phase (default 20)")
    add("--per-loadgen", type=int, default=15_000, help="subscribers per load-generator process (default 15000)")
    add("--max-samples", type=int, default=1_000_000, help="latency samples kept per phase (default 1000000)")
    add("--servers", type=_servers, default=SERVER_KEYS,
        help=f"which servers, comma-separated (default {','.join(SERVER_KEYS)})")
    add("--conflate", action="store_true",
        help='also run the slow phase on fastpush with conflateGroups = ["tick.*"] (when it supports the key)')
    add("--json-out", type=Path, help="write machine, versions, parameters and results here")
    add("--quick", action="store_true", help="smoke run: 200 clients, 50 symbols, 5 each, short phases; "
                                             "never builds Centrifugo")
    return parser


def _settings(args: argparse.Namespace) -> TickerSettings:
    base = QUICK if args.quick else DEFAULTS
    chosen = {**base, **{name: value for name in base if (value := getattr(args, name)) is not None}}
    workload = Workload(chosen["clients"], chosen["symbols"], chosen["per_client"], args.zipf, args.tick_zipf)
    return TickerSettings(workload=workload, payload_bytes=args.payload_bytes, loads=args.loads,
                          step_seconds=chosen["step_seconds"], burst_deliveries=chosen["burst_deliveries"],
                          runs=chosen["runs"], slow_share=args.slow_share, slow_read=args.slow_read,
                          slow_load=args.slow_load, slow_seconds=chosen["slow_seconds"],
                          per_loadgen=args.per_loadgen, max_samples=args.max_samples)


def _check(settings: TickerSettings) -> None:
    """Refuse what cannot work before starting anything."""
    w = settings.workload
    if not 1 <= w.per_client <= w.symbols <= MAX_SYMBOLS or w.clients < 1:
        raise SystemExit(f"need 1 <= --per-client <= --symbols <= {MAX_SYMBOLS} and --clients >= 1")
    if settings.payload_bytes < MIN_BYTES:
        raise SystemExit(f"--payload-bytes must be at least {MIN_BYTES}")
    if not 0 < settings.slow_share < 1 or not 0 < settings.slow_read < 1 or not 0 < settings.slow_load <= 1:
        raise SystemExit("--slow-share and --slow-read must be between 0 and 1, --slow-load above 0, at most 1")
    if min(settings.runs, settings.burst_deliveries, settings.max_samples, settings.per_loadgen) < 1 or \
            min(settings.step_seconds, settings.slow_seconds) <= 0:
        raise SystemExit("--runs, --burst-deliveries, --max-samples, --per-loadgen and the durations must be positive")
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if w.clients + FD_MARGIN > files or settings.per_loadgen + FD_MARGIN > files:
        raise SystemExit(f"a process may open at most {files} files here: the server needs --clients + {FD_MARGIN} "
                         f"(raise `ulimit -Hn`), a load generator --per-loadgen + {FD_MARGIN}")


def _targets(args: argparse.Namespace, scratch: Path) -> tuple[list[TickerTarget], dict[str, str]]:
    """The targets to measure, in order, and why the others are skipped. The conflation row follows
    fastpush's, whose capacity sets its tick rate."""
    targets, skipped = [], {}
    for target in TICKER_TARGETS:
        if target.key not in args.servers:
            continue
        if reason := prepare_target(target, build=not args.quick):
            skipped[target.key] = reason
            continue
        targets.append(target)
        if target.key == "fastpush" and args.conflate:
            config, reason = conflation_support(scratch)
            if config is None:
                skipped["fastpush-conflate"] = reason or ""
            else:
                targets.append(fastpush_conflating(config))
    if args.conflate and "fastpush" not in args.servers:
        skipped["fastpush-conflate"] = "--conflate needs fastpush among --servers (its capacity sets the tick rate)"
    return targets, skipped


async def _run(args: argparse.Namespace, settings: TickerSettings, scratch: Path) -> tuple[list[dict], dict, str]:
    targets, skipped = _targets(args, scratch)
    cores = plan_cores()
    if cores.load:
        os.sched_setaffinity(0, cores.load)  # the publisher runs on the load side too
    print(f"cores: {cores.describe()}", flush=True)
    for key, reason in skipped.items():
        print(f"skipped {key}: {reason}", flush=True)
    subscriptions = settings.workload.subscriptions()
    progress = Progress(len(targets))
    rows: list[dict] = []
    children = Children(scratch)
    try:
        for at, target in enumerate(targets):
            capacity = None
            if target.key == "fastpush-conflate":
                base = next((r for r in rows if r["target"] == "fastpush" and "capacity" in r), None)
                if base is None:
                    skipped[target.key] = "fastpush's row failed, so there is no capacity to set the tick rate"
                    continue
                capacity = base["capacity"]["deliveries_per_second"]["median"]
            try:
                rows.append(await measure_ticker(target, settings, subscriptions, cores, children, progress, at,
                                                 scratch, capacity))
            except Exception as exc:  # one server failing must not lose the others' figures
                rows.append({"target": target.key, "label": target.label, "connections": settings.workload.clients,
                             "error": f"{type(exc).__name__}: {exc}"})
    finally:
        progress.close()
        await children.close()
    return rows, skipped, cores.describe()


async def _main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    settings = _settings(args)
    _check(settings)
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="fastpush-ticker-") as scratch:
        rows, skipped, cores = await _run(args, settings, Path(scratch))
    print(tables(rows, skipped), flush=True)
    w = settings.workload
    print(f"\n{w.clients} subscribers following {w.per_client} of {w.symbols} symbols each (Zipf {w.zipf:g}); ticks "
          f"of {settings.payload_bytes} B, symbols drawn with Zipf {w.tick_zipf:g}; capacity: median of "
          f"{settings.runs} bursts of {settings.burst_deliveries} deliveries; {settings.step_seconds:g} s per load; "
          f"slow phase: {settings.slow_share:.0%} of subscribers read {settings.slow_read:.0%} of their bytes at "
          f"{settings.slow_load:.0%} of capacity for {settings.slow_seconds:g} s. "
          f"Took {time.monotonic() - started:.0f} s.")
    if args.json_out:
        document = {"benchmark": "ticker", "started": stamp, "command": ["python", "-m", "benches.ticker",
                                                                          *sys.argv[1:]],
                    "seconds": round(time.monotonic() - started, 1), "machine": machine(),
                    "versions": {**versions(), "centrifugo": centrifugo.VERSION}, "cores": cores,
                    "parameters": dataclasses.asdict(settings), "skipped": skipped, "results": rows}
        args.json_out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 1 if any("error" in r for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_bench("benches.ticker", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
