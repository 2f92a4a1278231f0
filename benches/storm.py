"""A reconnect storm: every worker of `fastpush serve --workers N` restarted at once, every subscriber
coming back.

With the subscribers connected, each load generator is told to bring back whatever the server closes
(benches/loadgen.py: at once, then after about `retry_delay` seconds per failure); then every worker gets
SIGTERM at the same moment, as a deploy that restarts them all would. Each drains (closes its clients
with 1012) and the parent starts a fresh worker in its place. Figures: the time from the signal until
every subscriber was back, the handshakes that failed meanwhile (and why), each successful handshake's
time, and how the kernel spread the subscribers over the new workers.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from .loadgens import LoadGen, collect
from .procs import descendants, established_by_process
from .servers import RunningServer
from .stats import summarize_ns

__all__ = ["reconnect_storm"]

EVENT_TIMEOUT = 30.0
SETTLE_SECONDS = 1.0  # for the last workers' processes to be counted once all subscribers are back


async def reconnect_storm(server: RunningServer, gens: list[LoadGen], scratch: Path, *, seconds: float,
                          retry_delay: float, concurrency: int) -> dict:
    """Restart every worker at once; wait (at most `seconds`) until every subscriber is back."""
    await asyncio.gather(*(g.command("storm", seconds=seconds, retry_delay=retry_delay, concurrency=concurrency)
                           for g in gens))
    old = list(server.workers)
    began = time.monotonic_ns()
    for pid in old:
        os.kill(pid, signal.SIGTERM)
    reports = await asyncio.gather(*(g.expect("restored", seconds + EVENT_TIMEOUT) for g in gens))
    handshakes = summarize_ns(await collect(gens, scratch, "handshakes", EVENT_TIMEOUT))
    handshakes.pop("curve", None)
    await asyncio.sleep(SETTLE_SECONDS)
    server.workers = [pid for pid in descendants(server.pid) if pid not in old]
    expected = sum(r["expected"] for r in reports)
    back = sum(r["ready"] for r in reports)
    restored = [r["restored_ns"] for r in reports]
    errors: dict[str, int] = {}
    for report in reports:
        for why, count in report["errors"].items():
            errors[why] = errors.get(why, 0) + count
    return {"workers_restarted": len(old), "expected": expected, "closed": sum(r["lost"] for r in reports),
            # more can be back than were counted at the start: a subscriber still reconnecting then
            "back": back, "all_back": back >= expected and None not in restored,
            "seconds": round((max(restored) - began) / 1e9, 3) if None not in restored else None,
            "failed_handshakes": sum(r["failures"] for r in reports),
            "gave_up": sum(r["gave_up"] for r in reports), "errors": errors, "handshake": handshakes,
            "retry_delay": retry_delay, "concurrency_per_loadgen": concurrency, "limit_seconds": seconds,
            "connections_per_worker": established_by_process(server.workers, server.port)}
