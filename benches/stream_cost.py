"""What a group stream costs the server against plain group messages: a JSON publisher sends
--messages messages of --size bytes to a group of --members JSON clients, as plain `sendToGroup`s
or as the fragments of one group stream (a start, `streamData`, an end; fastpush acks them), against
`fastpush serve` in its own process. The two modes run --runs times, interleaved; prints the
server's CPU time per message (user + system, from /proc), median and spread.

    python -m benches.stream_cost
    python -m benches.stream_cost --messages 20000 --members 10 --runs 5
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benches.procs import cpu_seconds  # noqa: E402
from tests.cli_process import ServeProcess  # noqa: E402 (a checkout's tests helpers)
from tests.helpers import JSON_V1, ServerView, client_url  # noqa: E402

MODES = ("sendToGroup", "stream")


def _frames(mode: str, count: int, data: str) -> list[str]:
    if mode == "sendToGroup":
        return [json.dumps({"type": "sendToGroup", "group": "g", "dataType": "text", "data": data})] * count
    return ([json.dumps({"type": "sendToGroup", "group": "g", "stream": {"streamId": "s"}})]
            + [json.dumps({"type": "streamData", "streamId": "s", "streamSequenceId": i, "dataType": "text",
                           "data": data}) for i in range(1, count + 1)]
            + [json.dumps({"type": "streamEnd", "streamId": "s"})])


async def _run(view: ServerView, mode: str, count: int, size: int, members: int, hub: str) -> None:
    """Every member has every message (and the stream's end) when this returns."""
    expected = count + (1 if mode == "stream" else 0)
    readers = [await websockets.connect(client_url(view, hub, groups=["g"]), subprotocols=[JSON_V1], max_size=None)
               for _ in range(members)]
    for ws in readers:
        await ws.recv()  # connected

    async def read(ws) -> None:
        for _ in range(expected):
            await ws.recv()
        await ws.close()
    tasks = [asyncio.create_task(read(ws)) for ws in readers]
    async with websockets.connect(client_url(view, hub, roles=["webpubsub.sendToGroup"]), subprotocols=[JSON_V1],
                                  max_size=None) as publisher:
        await publisher.recv()  # connected
        drain = asyncio.create_task(_drain(publisher))
        for frame in _frames(mode, count, "x" * size):
            await publisher.send(frame)
        await asyncio.gather(*tasks)
        drain.cancel()


async def _drain(ws) -> None:
    while True:
        await ws.recv()  # the stream's acks and its close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=100, help="bytes of text per message")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    server = ServeProcess("--log-level", "WARNING")
    try:
        view = ServerView.parse(server.connection_string)
        threading.Thread(target=lambda: [None for _ in server.proc.stdout], daemon=True).start()
        costs: dict[str, list[float]] = {mode: [] for mode in MODES}
        for run in range(args.runs):
            for mode in MODES:
                before = cpu_seconds(server.proc.pid)
                asyncio.run(_run(view, mode, args.messages, args.size, args.members, f"bench{run}{mode[:3]}"))
                costs[mode].append((cpu_seconds(server.proc.pid) - before) / args.messages * 1e6)
        print(f"{args.messages:,} messages of {args.size} bytes to {args.members} JSON members per run, "
              f"{args.runs} runs per mode, interleaved; server: fastpush serve")
        for mode, values in costs.items():
            print(f"  {mode:12s} {statistics.median(values):6.1f} us of server CPU per message  "
                  f"(min {min(values):.1f}, max {max(values):.1f})")
    finally:
        server.stop(2)


if __name__ == "__main__":
    main()
