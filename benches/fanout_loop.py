"""The fan-out loop's own cost per recipient, without sockets: what a change to the loop adds.

    python -m benches.fanout_loop                       # 10,000 recipients, 200 broadcasts, 7 runs
    python -m benches.fanout_loop --recipients 100000 --runs 11

Every recipient is a JSON connection with no transport, so the loop walks the members, picks the
frame for their wire variant and stops at the write: the syscall, which dominates a real broadcast
(see `python -m benches.fanout`), is left out on purpose. Prints the median and the spread in
nanoseconds per recipient; compare two builds in the same run of the machine.
"""
from __future__ import annotations

import argparse
import statistics
import time

from fastpush import _fanout
from fastpush.protocol.json_protocol import ServerSource
from fastpush.protocol.payload import DataType, Payload
from fastpush.protocol.variants import Variant


def measure(recipients: int, broadcasts: int, runs: int) -> list[float]:
    members = [_fanout.Connection(f"c{i}", None, "bench", "json.webpubsub.azure.v1", Variant.JSON)
               for i in range(recipients)]
    frames = _fanout.Frames(Payload(DataType.TEXT, b"x" * 100), ServerSource())
    results = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        for _ in range(broadcasts):
            _fanout.fanout(members, frames)
        results.append((time.perf_counter_ns() - start) / (broadcasts * recipients))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--broadcasts", type=int, default=200)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    results = measure(args.recipients, args.broadcasts, args.runs)
    print(f"fan-out loop, {args.recipients} recipients x {args.broadcasts} broadcasts, {args.runs} runs: "
          f"median {statistics.median(results):.2f} ns/recipient (min {min(results):.2f}, max {max(results):.2f})")


if __name__ == "__main__":
    main()
