"""Child processes of a benchmark run and what /proc says about them.

Children are pinned to their cores before exec, get a signal if the orchestrator dies
(PR_SET_PDEATHSIG), run in their own session (Ctrl-C reaches only the orchestrator, which then kills
them in order), and are all killed when the run ends, whatever ends it. A child's own children (the
workers of `fastpush serve --workers N`) share its process group and are killed with it.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["Children", "CorePlan", "core_seconds", "cpu_seconds", "descendants", "established_by_process",
           "plan_cores", "rss_bytes"]

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
STOP_GRACE = 3.0
_ESTABLISHED = "01"  # the `st` column of /proc/net/tcp


@dataclass(frozen=True)
class CorePlan:
    """Which CPUs the server under test and the load side (load generators, publisher) run on; None is
    not pinned. `cpus` are all the CPUs the run may use."""

    server: frozenset[int] | None
    load: frozenset[int] | None
    cpus: frozenset[int]

    def describe(self) -> str:
        if self.load is None:
            return "not pinned (one core: server and load generators share it)"
        if self.server is None:
            return (f"server not pinned (it runs on all CPUs {_cpus(self.cpus)}, shared with the load side); "
                    f"load generators and publisher pinned to CPU {_cpus(self.load)}")
        return (f"server pinned to CPU {_cpus(self.server)}; load generators and publisher pinned to "
                f"CPU {_cpus(self.load)}")

    @property
    def server_cpus(self) -> frozenset[int]:
        """Where the server may run, given explicitly even when it is not pinned: children inherit the
        orchestrator's own pinning to the load side otherwise."""
        return self.server or self.cpus

    def unpinned_server(self) -> CorePlan:
        """The same load side, the server free to use every CPU: the point of several workers."""
        return replace(self, server=None)


def _cpus(cpus: frozenset[int] | None) -> str:
    return ",".join(str(c) for c in sorted(cpus or ()))


def plan_cores() -> CorePlan:
    """First allowed CPU for the server, the rest for the load side; no pinning on one core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return CorePlan(None, None, frozenset(cpus))
    return CorePlan(frozenset(cpus[:1]), frozenset(cpus[1:]), frozenset(cpus))


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


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from the parent pid in each /proc/*/stat (/proc/PID/task/*/children
    needs a kernel option that is often off)."""
    below: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # it exited meanwhile
                continue
            below.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = below.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return sorted(found)


def established_by_process(pids: Sequence[int], port: int) -> list[int]:
    """How many established TCP connections on local `port` each process holds: the socket inodes of
    its open files matched against /proc/net/tcp. Tells how the kernel spread clients over workers."""
    connected = _established_inodes(port)
    return [len(_socket_inodes(pid) & connected) for pid in pids]


def _established_inodes(port: int) -> set[int]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            next(f)  # the header
            for line in f:
                fields = line.split()
                if fields[3] == _ESTABLISHED and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(fields[9]))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"{fds}/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _child_setup(cpus: frozenset[int] | None, death_signal: int):
    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        _libc.prctl(_PR_SET_PDEATHSIG, death_signal)
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return setup


class Children:
    """Spawns children with their stderr in `log_dir`, and ends them all on `close`."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, name: str, argv: Sequence[str], cpus: frozenset[int] | None, cwd: Path,
                    death_signal: int = signal.SIGKILL) -> asyncio.subprocess.Process:
        """Start a child; `death_signal` reaches it if the orchestrator dies (SIGTERM for a parent that
        must stop its own children: the kernel does not pass the death signal on to them)."""
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=cwd,
                preexec_fn=_child_setup(cpus, death_signal), start_new_session=True)
        self.procs.append(proc)
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, proc: asyncio.subprocess.Process) -> None:
        """Close its stdin and SIGTERM it; then SIGKILL its process group, which ends it if it outlived
        a grace period and whatever it left behind (workers) either way."""
        if proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
        _kill_group(proc)
        await proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    async def close(self) -> None:
        for proc in self.procs:
            _kill_group(proc)
        for proc in self.procs:
            await proc.wait()
        self.procs.clear()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's process group (its pid: it started a session); gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
