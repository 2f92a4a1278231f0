"""fastpush embedded in a Python program, publishing through the embedding API instead of REST.

    python -m benches.embedded_server --access-key K      # prints the connection string

Each line on stdin is sent with `hub.send_to_all(line, content_type="text/plain")`, the same
trigger as the peers in benches/peers/, so the benchmark compares fan-out without HTTP in the way.
"""
from __future__ import annotations

import argparse
import asyncio

import uvloop

import fastpush

from .stdin_lines import broadcast_stdin_lines

BENCH_CONNECTIONS_PER_IP = 1_000_000


async def serve(access_key: str, hub_name: str) -> None:
    # Every subscriber comes from 127.0.0.1: the per-address cap must not stand in the way.
    async with fastpush.Server(port=0, access_key=access_key,
                               max_connections_per_ip=BENCH_CONNECTIONS_PER_IP) as server:
        print(server.connection_string, flush=True)
        hub = server.hub(hub_name)
        loop = asyncio.get_running_loop()
        await broadcast_stdin_lines(
            lambda line: loop.create_task(hub.send_to_all(line.decode(), content_type="text/plain")))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.embedded_server", description=__doc__.split("\n")[0])
    parser.add_argument("--access-key", required=True)
    parser.add_argument("--hub", default="bench")
    args = parser.parse_args()
    uvloop.run(serve(args.access_key, args.hub))


if __name__ == "__main__":
    main()
