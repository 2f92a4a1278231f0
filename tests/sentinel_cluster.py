"""Redis high availability for tests: a real master, a replica and three Sentinels on free loopback
ports, started from the machine's redis-server (`redis-server FILE --sentinel` is Sentinel mode;
Debian's redis-server package has it). Every process is the test's own and dies with `stop()`.

Sentinels here notice a dead master after 1 s (`down-after-milliseconds`), so a failover takes a
few seconds; a master syncs a replica at once (`repl-diskless-sync-delay 0`: by default it waits
5 s for more replicas to share the transfer, which only delayed every cluster's start); the rest of
the settings are Redis' defaults.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import hiredis
import pytest

MASTER_NAME = "fastpush-ha"
QUORUM = 2
DOWN_AFTER_MS = 1000
READY_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(port: int, *args: str | int, timeout: float = 5.0):
    """One command to the Redis or Sentinel on `port`, its parsed reply (an error reply as a value)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(hiredis.pack_command(tuple(args)))
        reader = hiredis.Reader()
        while (reply := reader.gets()) is False:
            data = conn.recv(65536)
            if not data:
                raise ConnectionError(f"port {port} closed the connection")
            reader.feed(data)
        return reply


def _pairs(flat: list) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class SentinelCluster:
    def __init__(self, directory: Path, sentinels: int = 3, sentinel_password: str | None = None):
        self.executable = shutil.which("redis-server")
        if self.executable is None:
            pytest.fail("the Sentinel tests need redis-server on PATH (Debian: apt-get install redis-server)")
        self.dir = directory
        self.procs: dict[int, subprocess.Popen] = {}
        self.master_port = self._redis()
        self.replica_port = self._redis("--replicaof", "127.0.0.1", str(self.master_port))
        self.sentinel_ports = [self._sentinel(sentinel_password) for _ in range(sentinels)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    # --- processes ------------------------------------------------------------------------------
    def _spawn(self, port: int, argv: list[str]) -> int:
        log = open(self.dir / f"{port}.log", "wb")  # noqa: SIM115  # kept open for the process's life
        self.procs[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                command(port, "PING", timeout=1)  # PONG, or NOAUTH from a Sentinel with a password: up
                return port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{argv[:2]} did not answer on port {port}:\n{self.log(port)}")

    def _redis(self, *extra: str) -> int:
        port = free_port()
        return self._spawn(port, [self.executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--repl-diskless-sync-delay", "0", "--dir", str(self.dir),
                                  *extra])

    def _sentinel(self, password: str | None) -> int:
        port = free_port()
        conf = self.dir / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
        lines = [f"port {port}", "bind 127.0.0.1", f"dir {self.dir}",
                 f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} {QUORUM}",
                 f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                 f"sentinel failover-timeout {MASTER_NAME} 10000"]
        if password is not None:
            lines.append(f"requirepass {password}")
        conf.write_text("\n".join(lines) + "\n")
        return self._spawn(port, [self.executable, str(conf), "--sentinel"])

    def log(self, port: int) -> str:
        path = self.dir / f"{port}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self, port: int) -> None:
        """SIGKILL: no goodbye, as when a host dies."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)

    # --- what the Sentinels see -----------------------------------------------------------------
    def wait_ready(self) -> None:
        """Until every Sentinel knows the master, sees the replica up, and knows the other
        Sentinels: only then can they agree on a failover."""
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if all(self._sentinel_ready(port) for port in self.sentinel_ports):
                return
            time.sleep(0.1)
        raise RuntimeError("the Sentinels did not see the replica and each other:\n" +
                           "\n".join(self.log(port) for port in self.sentinel_ports))

    def _sentinel_ready(self, port: int) -> bool:
        replicas = command(port, "SENTINEL", "REPLICAS", MASTER_NAME)
        others = command(port, "SENTINEL", "SENTINELS", MASTER_NAME)
        if not isinstance(replicas, list) or not isinstance(others, list):
            return False
        up = [r for r in map(_pairs, replicas) if r[b"flags"] == b"slave" and r[b"master-link-status"] == b"ok"]
        return len(up) == 1 and len(others) == len(self.sentinel_ports) - 1

    def master_now(self) -> int | None:
        """The master's port as the first Sentinel that answers says it."""
        for port in self.sentinel_ports:
            try:
                reply = command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME, timeout=2)
            except OSError:
                continue
            if isinstance(reply, list):
                return int(reply[1])
        return None
