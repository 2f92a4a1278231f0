"""The headline benchmark: how fast fastpush fans one message out to N WebSocket subscribers.

    python -m benches.fanout                                   # N = 1,000 and 10,000; fastpush only
    python -m benches.fanout --peers --json-out bench.json --plot bench.png
    python -m benches.fanout --connections 10000 --peers c-send,c-batch   # fastpush against the C floor only
    python -m benches.fanout --quick                           # a smoke run in well under 30 s
    python -m benches.fanout --connections 10000 --workers 2 --redis   # one process against 2 workers + Redis
    python -m benches.fanout --connections 10000 --scrape-metrics      # with /metrics scraped every second

For each N it starts the server under test in its own process (pinned to one core when there are two
or more), connects N subscribers from load-generator processes on the other core(s), half raw and half
json.webpubsub.azure.v1, and publishes through fastpush's REST API and through its embedding API (and,
with --peers, the same load against websockets, Node ws and a plain picows loop, triggered the same
way as the embedded fastpush, against Centrifugo, whose subscribers speak its own protocol and
which gets its messages as a client's publish commands, and against the floor: a C epoll server writing
each message with one send() per subscriber, and its variant writing up to 64 with one writev()).
With --redis or --workers N it also measures fastpush scaled out on a redis-server of its own, through
REST: one node with --redis-url, and N workers sharing the port on all CPUs; the embedded row is then
left out unless --peers needs it as their baseline. See benches/measure.py for the procedure.
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from . import payload
from .environment import machine, versions
from .measure import Settings, measure
from .plot import plot_latency
from .procs import Children, CorePlan, plan_cores
from .progress import Progress
from .report import ratios, scaling, table
from .servers import (
    FASTPUSH_EMBED,
    FASTPUSH_REST,
    PEER_KEYS,
    PEERS,
    Target,
    prepare,
    redis_targets,
)

__all__ = ["main"]

FD_MARGIN = 64
QUICK = {"connections": [200], "messages": 20, "duration": 5.0, "burst_deliveries": 20_000}
DEFAULTS = {"connections": [1000, 10000], "messages": 100, "duration": 15.0, "burst_deliveries": 1_000_000}


def _connections(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive connection counts")
    return counts


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a positive number")
    return value


def _peer_keys(text: str) -> tuple[str, ...]:
    keys = tuple(part.strip() for part in text.split(",") if part.strip())
    if not keys or set(keys) - set(PEER_KEYS):
        raise argparse.ArgumentTypeError(f"the peers are {','.join(PEER_KEYS)}")
    return keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benches.fanout", description=__doc__.split("\n")[0],
                                     epilog="Everything listens on 127.0.0.1; every child process is killed on exit.")
    parser.add_argument("--connections", type=_connections, help="comma-separated N values (default 1000,10000)")
    parser.add_argument("--payload-bytes", type=int, default=100,
                        help=f"message size (default 100, at least {payload.MIN_BYTES})")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="isolated broadcasts per second at most "
                             "(default 20; never before the previous one is fully delivered)")
    parser.add_argument("--messages", type=int, help="isolated broadcasts timed per server and N (default 100)")
    parser.add_argument("--duration", type=float,
                        help="seconds the latency phase may take per server and N (default 15)")
    parser.add_argument("--burst-deliveries", type=int,
                        help="deliveries per saturation run; messages = this / N (default 1000000)")
    parser.add_argument("--runs", type=int, default=3, help="saturation runs; the median is reported (default 3)")
    parser.add_argument("--json-fraction", type=float, default=0.5,
                        help="share of json.webpubsub.azure.v1 subscribers (default 0.5)")
    parser.add_argument("--per-loadgen", type=int, default=15_000,
                        help="subscribers per load-generator process (default 15000)")
    parser.add_argument("--peers", type=_peer_keys, nargs="?", const=PEER_KEYS, default=(), metavar="KEYS",
                        help="also measure websockets, Node ws, a plain picows loop, Centrifugo (built with "
                             "`go install` when Go is here and it is missing) and the C floor (built with `cc`), "
                             f"or only the comma-separated KEYS of them ({','.join(PEER_KEYS)}), which "
                             "--quick then keeps")
    parser.add_argument("--redis", action="store_true",
                        help="also measure fastpush on a Redis broker (one node; it starts its own redis-server)")
    parser.add_argument("--workers", type=_positive, default=1, metavar="N",
                        help="also measure `fastpush serve --workers N` on one port, on all CPUs "
                             "(N > 1 implies --redis)")
    parser.add_argument("--scrape-metrics", type=float, nargs="?", const=1.0, metavar="SECONDS",
                        help="GET fastpush's /metrics (with the access key) every SECONDS (default 1) while each "
                             "fastpush row is measured, as Prometheus would")
    parser.add_argument("--json-out", type=Path, help="write machine, versions, parameters and results here")
    parser.add_argument("--plot", type=Path, help="write the latency distribution as a PNG (needs matplotlib)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 200 connections, few messages, no peers unless --peers names them")
    return parser


def _settings(args: argparse.Namespace) -> tuple[list[int], Settings]:
    base = QUICK if args.quick else DEFAULTS
    given = {name: value for name in base if (value := getattr(args, name)) is not None}
    chosen: dict = {**base, **given}
    settings = Settings(payload_bytes=args.payload_bytes, rate=args.rate, messages=chosen["messages"],
                        duration=chosen["duration"], burst_deliveries=chosen["burst_deliveries"], runs=args.runs,
                        json_fraction=args.json_fraction, per_loadgen=args.per_loadgen,
                        scrape_interval=args.scrape_metrics)
    return chosen["connections"], settings


def _targets(args: argparse.Namespace) -> list[Target]:
    """The rows per N, in order. A Redis deployment is compared with one process through REST, so with
    Redis the embedded row is measured only when --peers needs it as their baseline."""
    chosen = set(args.peers) if not args.quick or args.peers != PEER_KEYS else set()
    peers = [t for t in PEERS if t.key in chosen]
    redis = args.redis or args.workers > 1
    targets = [FASTPUSH_REST] + ([FASTPUSH_EMBED] if peers or not redis else [])
    if redis:
        targets += redis_targets(args.workers)
    return targets + peers


def _check(connections: list[int], settings: Settings) -> None:
    """Refuse what cannot work before starting anything."""
    if settings.payload_bytes < payload.MIN_BYTES:
        raise SystemExit(f"--payload-bytes must be at least {payload.MIN_BYTES}")
    if settings.rate <= 0 or settings.messages < 1 or settings.runs < 1 or settings.burst_deliveries < 1:
        raise SystemExit("--rate, --messages, --runs and --burst-deliveries must be positive")
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if max(connections) + FD_MARGIN > files or settings.per_loadgen + FD_MARGIN > files:
        raise SystemExit(f"a process may open at most {files} files here: the server needs N + {FD_MARGIN} "
                         f"(raise `ulimit -Hn`), a load generator --per-loadgen + {FD_MARGIN}")


async def _run(targets: list[Target], connections: list[int], settings: Settings, cores: CorePlan,
               skipped: dict) -> list[dict]:
    if cores.load:
        os.sched_setaffinity(0, cores.load)  # the publisher runs on the load side too
    print(f"cores: {cores.describe()}", flush=True)
    for target in targets:
        if target.workers > 1 and cores.load is not None:
            print(f"cores for {target.label}: {cores.unpinned_server().describe()}", flush=True)
    for key, reason in skipped.items():
        print(f"skipped {key}: {reason}", flush=True)
    progress = Progress(len(targets) * len(connections))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fastpush-bench-") as scratch:
        children = Children(Path(scratch))
        try:
            for n in connections:
                for target in targets:
                    try:
                        rows.append(await measure(target, n, settings, cores, children, progress, len(rows),
                                                  Path(scratch)))
                    except Exception as exc:  # one server failing must not lose the others' figures
                        rows.append({"target": target.key, "label": target.label, "connections": n,
                                     "error": f"{type(exc).__name__}: {exc}"})
        finally:
            progress.close()
            await children.close()
    return rows


async def _main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    connections, settings = _settings(args)
    _check(connections, settings)
    targets = _targets(args)
    skipped = {t.key: reason for t in targets if (reason := prepare(t))}
    cores = plan_cores()
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    rows = await _run([t for t in targets if t.key not in skipped], connections, settings, cores, skipped)
    ratios(rows)
    print(table(rows), flush=True)
    if comparisons := scaling(rows):
        print("\n" + "\n".join(comparisons), flush=True)
    print(f"\npayload {settings.payload_bytes} B, {settings.json_fraction:.0%} json.webpubsub.azure.v1 subscribers; "
          f"latency: isolated broadcasts at most {settings.rate:g}/s; saturation: median of {settings.runs} runs "
          f"of {settings.burst_deliveries} deliveries; srv us/deliv and the second loadgen figure are CPU during "
          f"saturation. fp/this = fastpush (embedded, same stdin trigger as the peers but Centrifugo, which gets "
          f"a client's publish commands) / this row; for the Redis "
          f"rows, fastpush (REST), one process without Redis / this row. "
          f"Took {time.monotonic() - started:.0f} s.")
    if args.json_out:
        document = {"benchmark": "fanout", "started": stamp,
                    "command": ["python", "-m", "benches.fanout", *sys.argv[1:]],
                    "seconds": round(time.monotonic() - started, 1), "machine": machine(), "versions": versions(),
                    "cores": cores.describe(),
                    "parameters": {"connections": connections, **dataclasses.asdict(settings)},
                    "skipped": skipped, "results": rows}
        args.json_out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    if args.plot:
        why_not = plot_latency(rows, args.plot)
        print(why_not or f"wrote {args.plot}")
    return 1 if any("error" in r for r in rows) else 0


def _unbuilt_fanout(bench: str) -> str | None:
    """Why not to measure: the checkout's compiled fan-out is not built, so fastpush fell back to its
    pure-Python twin, whose figures are not fastpush's (unless FASTPUSH_NO_EXTENSIONS=1 asks for it)."""
    from fastpush import fanout

    if fanout.IMPLEMENTATION == "fastpush._fanout" or os.environ.get("FASTPUSH_NO_EXTENSIONS") == "1":
        return None
    return (f"{bench}: not measuring: the compiled fan-out is not built in this checkout; run "
            "`pip install -e .` (or `python3 setup.py build_ext --inplace`) here first, or set "
            "FASTPUSH_NO_EXTENSIONS=1 to measure the pure-Python twin on purpose")


def run_bench(bench: str, measure: Callable[[], Awaitable[int]]) -> int:
    """A benchmark's entry point: it refuses to measure the pure-Python twin by accident, runs
    `measure` on uvloop, and says so when Ctrl-C stopped it (its child processes stop with it)."""
    refusal = _unbuilt_fanout(bench)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    try:
        return uvloop.run(measure())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; all child processes were stopped", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_bench("benches.fanout", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
