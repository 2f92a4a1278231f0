"""The process's CPU, memory, start time and open files, under the names prometheus_client's
process collector gives them (`process_*`, what dashboards expect), read from /proc/self.

prometheus_client's own collector counts open files by listing /proc/self/fd: 20 ms of the event
loop per scrape at 10,000 sockets, 200 ms at 100,000, during which no client is served. Linux
6.2 and later give the count as the directory's size, in constant time; this collector reads
that, and lists the directory only on an older kernel (which reports a size of 0). Elsewhere
than Linux it yields nothing, as prometheus_client's does.
"""
from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["ProcessCollector"]

_SELF = Path("/proc/self")


class ProcessCollector:
    def __init__(self) -> None:
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page = resource.getpagesize()
        self._boot = _boot_time()

    def collect(self) -> Iterator[Metric]:
        if self._boot is None:
            return
        try:
            fields = (_SELF / "stat").read_bytes().rsplit(b")", 1)[1].split()  # after the command's name
        except OSError:
            return
        # proc(5): fields 14 and 15 (utime, stime), 22 (starttime), 23 (vsize), 24 (rss) of the
        # line, here counted from field 3 (state) at index 0.
        yield CounterMetricFamily("process_cpu_seconds", "Total user and system CPU time spent in seconds.",
                                  value=(int(fields[11]) + int(fields[12])) / self._ticks)
        yield GaugeMetricFamily("process_start_time_seconds", "Start time of the process since unix epoch in "
                                "seconds.", value=self._boot + int(fields[19]) / self._ticks)
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                value=int(fields[20]))
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                                value=int(fields[21]) * self._page)
        open_files = _open_files()
        if open_files is not None:
            yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", value=open_files)
        yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.",
                                value=resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _open_files() -> int | None:
    try:
        count = (_SELF / "fd").stat().st_size
        return count or len(os.listdir(_SELF / "fd")) - 1  # less the descriptor the listing itself holds
    except OSError:
        return None


def _boot_time() -> float | None:
    """When the machine booted (/proc/stat's btime); None without /proc."""
    try:
        for line in Path("/proc/stat").read_bytes().splitlines():
            if line.startswith(b"btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None
