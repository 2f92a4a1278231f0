"""`fastpush serve --workers N`: N server processes on one port (SO_REUSEPORT), sharing a Redis
broker, so one machine uses all its cores. The parent only reserves the port, starts, watches and
stops them, and replaces a worker that drains on its own SIGTERM (a rolling restart: signal the
workers one at a time; each hands its clients to the others and a fresh process takes its place).

SO_REUSEPORT lets any process of the same user join a port, so a second cluster started on the same
port would silently take half the clients (with other keys). The parent therefore first binds the
port without SO_REUSEPORT, which fails if anything listens there, and keeps that socket (never
listening, so it takes no clients) for its whole life: a later cluster's parent, or a plain server,
then finds the port taken.
"""
from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import IO, TextIO

from .auth.tokens import generate_access_key
from .broker.redis.link import describe_url
from .startup import STARTUP_SECONDS, StartupError, close_all, format_address, parse_address, reserve_port

__all__ = ["run_workers", "DRAINING_LINE"]

# Options every worker gets exactly as given (flag = "--" + dest with dashes); keys and the Redis
# URL travel in the environment instead, so they never show in a process listing.
PASSED_AS_GIVEN = ("log_level", "log_format", "recovery_window", "replay_max_messages", "replay_max_bytes",
                   "max_outbound_bytes", "keepalive", "idle_timeout", "max_message_bytes", "max_body_bytes",
                   "max_groups_per_connection", "max_streams_per_connection", "max_stream_bytes",
                   "max_connections", "max_connections_per_ip", "request_timeout",
                   "http_keepalive_timeout", "max_upstream_connections", "max_upstream_waiting", "config",
                   "public_host", "drain_timeout", "broker_loss_timeout")
FAILURE_PREFIX = "fastpush: "
DRAINING_LINE = "Draining"  # what a worker prints on stdout when a SIGTERM of its own starts its drain
STOP_SECONDS = 5.0  # how long workers that failed to start get to exit before they are killed
WORKER_START_SECONDS = STARTUP_SECONDS + 10.0  # a worker's own limit, plus starting Python


class _Worker:
    """One child process: its connection string once started, its one-line failure if it gave up."""

    def __init__(self, command: list[str], env: dict[str, str], events: _Events):
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.failure: str | None = None
        self.started = False
        self.replaced = False  # a replacement was started for it (it drains, or it stopped cleanly)
        stdout, stderr = self.proc.stdout, self.proc.stderr
        assert stdout is not None and stderr is not None  # both are pipes
        self._stderr = threading.Thread(target=self._read_stderr, args=(stderr,), daemon=True)
        self._stderr.start()
        threading.Thread(target=self._read_stdout, args=(stdout, events), daemon=True).start()

    def _read_stdout(self, stdout: IO[str], events: _Events) -> None:
        for line in stdout:
            if line.startswith("Endpoint="):
                self.started = True
                events.put((self, line.strip()))
            elif line.strip() == DRAINING_LINE:
                events.put((self, DRAINING_LINE))
            else:
                _write(sys.stdout, line)
        events.put((self, None))

    def _read_stderr(self, stderr: IO[str]) -> None:
        """Forward the log; keep a startup failure line for the parent to report once."""
        for line in stderr:
            if line.startswith(FAILURE_PREFIX) and not self.started:
                self.failure = line[len(FAILURE_PREFIX):].strip()
            else:
                _write(sys.stderr, line)

    def reason(self) -> str:
        self._stderr.join(timeout=5)
        return self.failure or f"a worker exited with code {self.proc.wait()} before it started"


# What the workers' stdout readers report: a worker's connection string, DRAINING_LINE, or None when
# its stdout ends.
_Events = queue.Queue[tuple[_Worker, str | None]]


def _write(stream: TextIO, line: str) -> None:
    stream.write(line)
    stream.flush()


def run_workers(args: argparse.Namespace, count: int, tls: tuple[str, str] | None) -> int:
    holders = reserve_port(args.host, args.port)
    try:
        return _run(args, count, tls, holders[0].getsockname()[1])
    finally:
        close_all(holders)


def _run(args: argparse.Namespace, count: int, tls: tuple[str, str] | None, port: int) -> int:
    # The Redis URL may hold passwords: it travels in the environment too (a worker reads
    # $FASTPUSH_REDIS_URL when --redis-url is not given), never in the workers' argv.
    env = dict(os.environ, FASTPUSH_ACCESS_KEY=args.access_key or generate_access_key(),
               FASTPUSH_REDIS_URL=args.redis_url)
    if args.secondary_key:
        env["FASTPUSH_SECONDARY_KEY"] = args.secondary_key
    # -P: no current directory on sys.path, so a source checkout there cannot shadow the install.
    command = [sys.executable, "-P", "-m", "fastpush", "serve", "--workers", "1", "--reuse-port", "--host", args.host,
               "--port", str(port), *_passed_on(args, tls)]
    events: _Events = queue.Queue()
    workers = [_Worker(command + _metrics_address(args, i), env, events) for i in range(count)]
    stopping = threading.Event()

    def stop(signum: int | None, frame: FrameType | None) -> None:
        """Pass the signal on (SIGTERM: each worker drains; SIGINT: each stops at once)."""
        stopping.set()
        for worker in list(workers):
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    try:
        connection_string = _wait_started(workers, events)
    except StartupError:
        interrupted = stopping.is_set()
        stop(None, None)
        _reap(workers)
        if interrupted:
            return 0
        raise
    pids = ", ".join(str(worker.proc.pid) for worker in workers)
    print(f"{count} workers on port {port} (pids {pids}), sharing {describe_url(args.redis_url)}", file=sys.stderr,
          flush=True)
    print(connection_string, flush=True)
    return _supervise(workers, events, stopping, lambda: _Worker(command, env, events), stop)


def _supervise(workers: list[_Worker], events: _Events, stopping: threading.Event, spawn: Callable[[], _Worker],
               stop: Callable[[int | None, FrameType | None], None]) -> int:
    """Until every worker has exited: replace a worker that drains on its own signal, or that stops
    cleanly (exit 0) without the parent asking; a worker that fails (or a replacement that cannot
    start) stops them all, exit 1. Exit 0 once all stopped cleanly when the parent was signalled."""
    failed = False
    while workers:
        worker, line = events.get()
        if line == DRAINING_LINE or (line is None and worker.started and worker.proc.wait() == 0):
            if not stopping.is_set() and not worker.replaced:
                worker.replaced = True
                workers.append(spawn())
                why = "is draining" if line == DRAINING_LINE else "stopped"
                _say(f"worker {worker.proc.pid} {why}; started worker {workers[-1].proc.pid} in its place")
        elif line is not None:
            _say(f"worker {worker.proc.pid} is serving")
        if line is not None:
            continue
        code = worker.proc.wait()
        workers.remove(worker)
        if stopping.is_set():
            failed = failed or (code != 0 and worker.started)  # one still starting may die of the signal
        elif worker.replaced:
            if code != 0:
                _say(f"worker {worker.proc.pid} exited with code {code} while draining")
        elif not worker.started:
            _say(f"a replacement worker could not start: {worker.reason()}; stopping")
            stop(None, None)
            failed = True
        else:
            _say(f"worker {worker.proc.pid} exited with code {code}; stopping")
            stop(None, None)
            failed = True
    return 1 if failed else 0


def _say(message: str) -> None:
    _write(sys.stderr, f"fastpush: {message}\n")


def _reap(workers: list[_Worker]) -> None:
    """Wait for workers told to stop; kill those still busy starting (e.g. waiting for Redis)."""
    deadline = time.monotonic() + STOP_SECONDS
    for worker in workers:
        try:
            worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()


def _wait_started(workers: list[_Worker], events: _Events) -> str:
    """The connection string once every worker is serving; StartupError with the first one's reason
    if a worker exits first, or if they take longer than WORKER_START_SECONDS."""
    deadline = time.monotonic() + WORKER_START_SECONDS
    started: list[str] = []
    while len(started) < len(workers):
        try:
            worker, line = events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise StartupError(f"the workers did not start within {WORKER_START_SECONDS:g} s") from None
        if line is None:
            raise StartupError(worker.reason())
        started.append(line)
    return started[0]


def _metrics_address(args: argparse.Namespace, index: int) -> list[str]:
    """Worker `index`'s own metrics listener: the given port + index (0: each picks a free one), so
    each worker is one scrape target; the option given as it is would put them all on one port."""
    if not args.metrics_address:
        return []
    host, port = parse_address(args.metrics_address)
    return ["--metrics-address", format_address(host, port + index if port else 0)]


def _passed_on(args: argparse.Namespace, tls: tuple[str, str] | None) -> list[str]:
    """The options every worker gets as given (keys travel in the environment, not argv)."""
    passed: list[str] = []
    for dest in PASSED_AS_GIVEN:
        value = getattr(args, dest)
        if value is not None:
            passed += ["--" + dest.replace("_", "-"), str(value)]
    if tls:
        passed += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    return passed
