"""What the Live Trace costs the server: a JSON client sends --messages pings as fast as it can and
waits for every pong, against `fastpush serve` in its own process, with no Live Trace open, with
one open but paused, with one receiving every line, and with one receiving payloads too. Each
mode runs --runs times, interleaved; prints the server's CPU time per message (user + system,
from /proc: the client is the slower side, so its rate says little), median and spread.

    python -m benches.trace_cost
    python -m benches.trace_cost --messages 50000 --runs 7
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benches.procs import cpu_seconds  # noqa: E402
from tests.cli_process import ServeProcess  # noqa: E402 (a checkout's tests helpers)
from tests.dashboard_client import Dashboard  # noqa: E402
from tests.helpers import JSON_V1, ServerView, client_url  # noqa: E402

MODES = {"no Live Trace": None, "Live Trace paused": {"paused": True},
         "Live Trace receiving": {"payloads": False}, "Live Trace with payloads": {"payloads": True}}


async def _pings(view: ServerView, count: int) -> None:
    async with websockets.connect(client_url(view, "bench"), subprotocols=[JSON_V1], max_size=None) as ws:
        await ws.recv()  # connected

        async def send() -> None:
            for _ in range(count):
                await ws.send('{"type":"ping"}')
        sender = asyncio.create_task(send())
        for _ in range(count):
            await ws.recv()
        await sender


def _drain(ws) -> None:
    try:
        while True:
            ws.recv()
    except Exception:
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    server = ServeProcess("--log-level", "WARNING")
    try:
        view = ServerView.parse(server.connection_string)
        login = next(line.split(" ", 1)[1].strip() for line in iter(server.proc.stdout.readline, "")
                     if line.startswith("Dashboard: "))
        threading.Thread(target=lambda: [None for _ in server.proc.stdout], daemon=True).start()
        user = Dashboard(view.endpoint)
        assert user.login(login).status == 200
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.runs):
            for mode, settings in MODES.items():
                ws = user.trace(**settings) if settings is not None else None
                reader = threading.Thread(target=_drain, args=(ws,), daemon=True) if ws else None
                if reader:
                    reader.start()
                    threading.Event().wait(0.2)  # the settings are applied
                before = cpu_seconds(server.proc.pid)
                asyncio.run(_pings(view, args.messages))
                rates[mode].append((cpu_seconds(server.proc.pid) - before) / args.messages * 1e6)
                if ws:
                    ws.close()
        print(f"{args.messages:,} pings per run, {args.runs} runs per mode, interleaved; server: fastpush serve")
        for mode, values in rates.items():
            print(f"  {mode:26s} {statistics.median(values):6.1f} us of server CPU per message  "
                  f"(min {min(values):.1f}, max {max(values):.1f})")
    finally:
        server.stop(2)


if __name__ == "__main__":
    main()
