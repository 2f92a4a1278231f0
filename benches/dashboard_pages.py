"""What one page of the dashboard's hub view costs at 100,000 connections (and more): the time to
build a page of connections at the start, the middle and the end of the hub's table, a page of a
user's and of a group's connections, a page of groups, and the hub list. In process, without
sockets (the rows of connections without a socket); prints the median of --repeat runs.

    python -m benches.dashboard_pages                 # 100,000 connections
    python -m benches.dashboard_pages --connections 200000 --page 200
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from fastpush import fanout
from fastpush.dashboard import views
from fastpush.node import Node
from fastpush.protocol.variants import Variant


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=views.MAX_PAGE, help="rows per page (at most 200)")
    parser.add_argument("--repeat", type=int, default=51)
    args = parser.parse_args()
    node = Node()
    hub = node.hub("bench")
    for i in range(args.connections):
        conn = fanout.Connection(f"conn{i:08d}", f"user{i % 1000}", "bench", None, int(Variant.RAW))
        hub.add_connection(conn, (f"group{i % 100}",))
    n, page = args.connections, args.page
    cases = [
        ("connections, first page", lambda: views.connection_page(hub, 0, page)),
        ("connections, middle page", lambda: views.connection_page(hub, n // 2, page)),
        ("connections, last page", lambda: views.connection_page(hub, n - page, page)),
        ("one user's connections", lambda: views.connection_page(hub, 0, page, user="user7")),
        ("one group's members, last page", lambda: views.connection_page(hub, n // 100 - page, page, group="group7")),
        ("groups, first page", lambda: views.group_page(hub, 0, page)),
        ("hub list", lambda: views.hub_list(node.hubs())),
    ]
    print(f"fan-out: {fanout.IMPLEMENTATION}; {n:,} connections in 1 hub, {page} rows a page; "
          f"median of {args.repeat} runs")
    for name, fn in cases:
        print(f"  {name:34s} {_median_ms(fn, args.repeat):8.3f} ms")


if __name__ == "__main__":
    main()
