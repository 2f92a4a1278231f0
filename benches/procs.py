"""Child processes of a benchmark run and what /proc says about them.

Children are pinned to their cores before exec, get SIGKILL if the orchestrator dies
(PR_SET_PDEATHSIG), run in their own session (Ctrl-C reaches only the orchestrator, which then kills
them in order), and are all killed when the run ends, whatever ends it.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Children", "CorePlan", "core_seconds", "cpu_seconds", "plan_cores", "rss_bytes"]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
STOP_GRACE = 3.0


@dataclass(frozen=True)
class CorePlan:
    """Which CPUs the server under test and the load side (load generators, publisher) run on."""

    server: frozenset[int] | None
    load: frozenset[int] | None

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (one core: server and load generators share it)"
        return (f"server pinned to CPU {_cpus(self.server)}; load generators and publisher pinned to "
                f"CPU {_cpus(self.load)}")


def _cpus(cpus: frozenset[int] | None) -> str:
    return ",".join(str(c) for c in sorted(cpus or ()))


def plan_cores() -> CorePlan:
    """First allowed CPU for the server, the rest for the load side; no pinning on one core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return CorePlan(None, None)
    return CorePlan(frozenset(cpus[:1]), frozenset(cpus[1:]))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all threads)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15 of stat


def core_seconds(cpus: frozenset[int]) -> float:
    """Time these CPUs ran tasks (user, nice, system) or lost to the hypervisor (steal), from /proc/stat.
    Interrupt time is left out: most of it is our own loopback traffic."""
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
                user, nice, system, steal = int(fields[0]), int(fields[1]), int(fields[2]), int(fields[7])
                total += user + nice + system + steal
    return total / _TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def _child_setup(cpus: frozenset[int] | None):
    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return setup


class Children:
    """Spawns children with their stderr in `log_dir`, and ends them all on `close`."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, name: str, argv: Sequence[str], cpus: frozenset[int] | None,
                    cwd: Path) -> asyncio.subprocess.Process:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=cwd,
                preexec_fn=_child_setup(cpus), start_new_session=True)
        self.procs.append(proc)
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, proc: asyncio.subprocess.Process) -> None:
        """Close its stdin and SIGTERM it; SIGKILL if it is still there after a grace period."""
        if proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for proc in self.procs:
            await proc.wait()
        self.procs.clear()
